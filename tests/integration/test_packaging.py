"""The wheel installs everything under realizar_ort, and the CLI explains itself."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_wheel_contents(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("realizar_ort-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"realizar_ort", wheel.name.split("-py3")[0] + ".dist-info"}
    for module in ("realizar_ort/kernels/__init__.py", "realizar_ort/server/__init__.py",
                   "realizar_ort/export/llm.py", "realizar_ort/manifest.py", "realizar_ort/templates/llama3.jinja",
                   "realizar_ort/generation/engine.py", "realizar_ort/grammar/matcher.py",
                   "realizar_ort/tools/generate.py", "realizar_ort/embeddings/engine.py"):
        assert module in names, module
    assert not any(n.startswith(("tests/", "bench/", "models/")) for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "realizar-ort = realizar_ort.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_cli_help_lists_subcommands() -> None:
    for cmd in ([sys.executable, "-m", "realizar_ort", "--help"], [str(Path(sys.executable).parent / "realizar-ort"), "--help"]):
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        for sub in ("export", "serve", "embed"):
            assert sub in out
    out = subprocess.run([sys.executable, "-m", "realizar_ort", "export", "llm", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--source" in out and "GGUF" in out.upper()


def test_cli_rejects_unknown_subcommand() -> None:
    proc = subprocess.run([sys.executable, "-m", "realizar_ort", "frobnicate"], capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
