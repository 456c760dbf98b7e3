from __future__ import annotations

import subprocess
import sys

import realizar_ort


def test_every_public_name_resolves() -> None:
    for name in realizar_ort.__all__:
        assert getattr(realizar_ort, name) is not None, name


def test_importing_the_package_is_cheap() -> None:
    code = "import sys, realizar_ort; print(sorted(m for m in ('onnxruntime', 'numba', 'starlette') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_all_lists_exactly_the_lazy_exports() -> None:
    assert sorted(realizar_ort.__all__) == sorted([*realizar_ort._EXPORTS, "__version__"])
