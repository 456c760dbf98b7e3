"""The project's structural rules, checked on the code itself."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNTIME_DIRS = {"realizar_ort": "realizar_ort", "kernels": "realizar_ort.kernels", "server": "realizar_ort.server"}
EXPORT_ONLY = ("torch", "transformers", "optimum", "sentence_transformers")


def _modules() -> list[tuple[str, Path]]:
    found = []
    for folder, package in RUNTIME_DIRS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if parts and parts[-1] == "__main__":
                continue
            found.append((".".join([package, *parts]), path))
    return found


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_importing_every_runtime_module_pulls_in_no_export_library() -> None:
    modules = [name for name, _ in _modules()]
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as exc:\n"
        "        if exc.name in ('ray', 'pyarrow'): continue  # optional extras, imported lazily\n"
        "        raise\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {EXPORT_ONLY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert len(modules) >= 5


def test_no_runtime_source_imports_an_export_library() -> None:
    offenders = {str(p.relative_to(REPO)): _imports(p) & set(EXPORT_ONLY) for _, p in _modules()}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_each_foreign_library_has_one_owner() -> None:
    owners = {"numba": ("kernels",), "starlette": ("server",), "uvicorn": ("server",)}
    for _, path in _modules():
        folder = path.relative_to(REPO).parts[0]
        for library, allowed in owners.items():
            if library in _imports(path):
                assert folder in allowed, f"{path.relative_to(REPO)} imports {library}; only {allowed} may"


def test_only_onnx_session_creates_sessions() -> None:
    creators = []
    for _, path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if name == "InferenceSession":
                    creators.append(str(path.relative_to(REPO)))
    assert set(creators) == {"realizar_ort/onnx_session.py"}


def test_dependencies_point_one_way() -> None:
    """kernels never imports the runtime or the server; the runtime never imports the server or export."""
    for _, path in _modules():
        folder = path.relative_to(REPO).parts[0]
        text = path.read_text(encoding="utf-8")
        if folder == "kernels":
            assert "realizar_ort" not in _imports(path) or "realizar_ort.kernels" in text, path
            assert "from realizar_ort." not in text.replace("from realizar_ort.kernels", ""), path
        # cli.py is the entry point: it dispatches to `export` and `serve` by module name, lazily.
        if folder in ("kernels", "realizar_ort") and path.name != "cli.py":
            assert "realizar_ort.server" not in text and "realizar_ort.export" not in text, path
