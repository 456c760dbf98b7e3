"""The project's structural rules, checked on the code itself.

- The runtime (``realizar_ort/``), the kernels and the server never import an export-time library.
- One owner per foreign library: numba in ``kernels/``, Starlette/uvicorn in ``server/``, onnxruntime
  sessions in ``realizar_ort/onnx_session.py``.
- Dependencies point one way: ``server -> realizar_ort -> kernels``; inside the runtime, each concern is a
  subpackage and the table ``MAY_IMPORT`` says which subpackage may use which. The shared core (the modules
  directly under ``realizar_ort/``) imports no subpackage, except the package's lazy public API and the CLI.
- No import circle between modules of the runtime.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNTIME_DIRS = {"realizar_ort": "realizar_ort", "kernels": "realizar_ort.kernels", "server": "realizar_ort.server"}
EXPORT_ONLY = ("torch", "transformers", "optimum", "sentence_transformers")
SUBPACKAGES = ("generation", "grammar", "tools", "embeddings")
SHARED_CORE = {"__init__", "__main__", "cli", "config", "errors", "manifest", "onnx_session", "tokenizer",
               "chat_template", "huge_pages"}
# subpackage -> the runtime subpackages it may import (the shared core and kernels are open to all)
MAY_IMPORT = {
    "generation": set(),
    "grammar": set(),
    "tools": {"generation", "grammar"},
    "embeddings": set(),
}
# The only imports against the table: lazy (inside a function, or typing-only) and documented where they stand.
ALLOWED_LAZY = {
    # ModelEngine.generate_with_tools / generate_with_tools_stream are conveniences over tools.generate.
    ("realizar_ort.generation.engine", "realizar_ort.tools.generate"),
}


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


def _runtime_imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """(absolute name imported, at module level?) for every import of a ``realizar_ort`` name; a
    ``from M import N`` gives ``M.N`` (N may be a module or a name in M)."""
    is_package = path.name == "__init__.py"
    base = module.split(".") if is_package else module.split(".")[:-1]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}  # `if TYPE_CHECKING:` imports never run: not top level
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                prefix = ".".join(anchor + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [f"{prefix}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        found += [(t, id(node) in top_level) for t in targets if t.startswith("realizar_ort")]
    return found


def _concern(module: str) -> str | None:
    """The runtime subpackage a module belongs to; "core" for the shared core; None outside the runtime."""
    parts = module.split(".")
    if parts[0] != "realizar_ort" or len(parts) == 1:
        return "core" if parts == ["realizar_ort"] else None
    if parts[1] in ("kernels", "server", "export"):
        return None
    return parts[1] if parts[1] in SUBPACKAGES else "core"


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
    for module, path in _modules():
        folder = path.relative_to(REPO).parts[0]
        for target, _ in _runtime_imports(module, path):
            if folder == "kernels":
                assert target.startswith("realizar_ort.kernels"), f"{module} imports {target}"
            # cli.py is the entry point: it dispatches to `export` and `serve` by module name, lazily.
            if folder == "realizar_ort":
                assert not target.startswith(("realizar_ort.server", "realizar_ort.export")), f"{module} -> {target}"
        if folder == "realizar_ort" and path.name != "cli.py":
            text = path.read_text(encoding="utf-8")
            assert "realizar_ort.server" not in text and "realizar_ort.export" not in text, path


def test_runtime_modules_live_in_their_subpackage_or_the_shared_core() -> None:
    top = {p.stem for p in (REPO / "realizar_ort").glob("*.py")}
    assert top == SHARED_CORE, f"modules outside a subpackage that are not shared core: {top - SHARED_CORE}"
    for name in SUBPACKAGES:
        init = REPO / "realizar_ort" / name / "__init__.py"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        assert "May import" in doc and "Start reading" in doc, f"{init} must say what it may import and where to start"


def test_subpackages_import_only_what_the_table_allows() -> None:
    offences = []
    for module, path in _modules():
        source = _concern(module)
        if source is None:
            continue
        for target, at_top in _runtime_imports(module, path):
            dest = _concern(target)
            if dest in (None, "core") or dest == source:
                continue
            if source == "core":
                # The shared core imports no concern, except the lazy public API table and the CLI's dispatch.
                if module in ("realizar_ort", "realizar_ort.cli"):
                    continue
                offences.append(f"{module} -> {target}")
            elif dest not in MAY_IMPORT[source] and (at_top or not any(module == m and target.startswith(f"{t}.") for m, t in ALLOWED_LAZY)):
                offences.append(f"{module} -> {target}")
    assert offences == []


def test_no_import_circle_between_runtime_modules() -> None:
    """Module-level imports between runtime modules form no cycle (lazy imports inside functions excluded)."""
    graph: dict[str, set[str]] = {}
    names = {m for m, _ in _modules()}
    for module, path in _modules():
        edges = set()
        for target, at_top in _runtime_imports(module, path):
            if not at_top:
                continue
            while target and target not in names:  # `from pkg.mod import Name` -> pkg.mod
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                edges.add(target)
        graph[module] = edges
    # Tarjan-free check: repeated removal of modules with no remaining outgoing edges.
    remaining = {m: set(e) for m, e in graph.items()}
    while True:
        leaves = {m for m, e in remaining.items() if not (e & remaining.keys())}
        if not leaves:
            break
        for m in leaves:
            del remaining[m]
    assert remaining == {}, f"import circle among: {sorted(remaining)}"


def test_the_circle_check_finds_a_circle(tmp_path: Path) -> None:
    """The relative-import resolver sees the edges the circle check relies on."""
    pkg = tmp_path / "realizar_ort" / "grammar"
    pkg.mkdir(parents=True)
    (pkg / "a.py").write_text("from .b import x\nfrom ..tokenizer import T\ndef f():\n    from ..tools import y\n")
    got = _runtime_imports("realizar_ort.grammar.a", pkg / "a.py")
    assert got == [("realizar_ort.grammar.b.x", True), ("realizar_ort.tokenizer.T", True),
                   ("realizar_ort.tools.y", False)]
