"""Cut OpenAI's OpenAPI spec down to the routes this server serves, for ``make fuzz`` (bench/fuzz.py).

    python bench/openapi_cut.py path/to/openai-openapi/openapi.json

Keeps ``POST /chat/completions``, ``POST /embeddings``, ``GET /models`` and ``GET /models/{model}`` and every
component they reference (transitively); writes ``bench/openai_openapi_served.json``. The source is the
MIT-licensed https://github.com/openai/openai-openapi (its licence: ``bench/openai_openapi_LICENSE``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

SERVED = {"/chat/completions": ("post",), "/embeddings": ("post",), "/models": ("get",), "/models/{model}": ("get",)}
OUT = Path(__file__).with_name("openai_openapi_served.json")


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/components/"):
            found.add(ref)
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def cut(spec: dict[str, Any]) -> dict[str, Any]:
    paths = {p: {m: spec["paths"][p][m] for m in methods} for p, methods in SERVED.items()}
    components: dict[str, dict[str, Any]] = {}
    todo: set[str] = set()
    _refs(paths, todo)
    done: set[str] = set()
    while todo:
        ref = todo.pop()
        if ref in done:
            continue
        done.add(ref)
        _, _, kind, name = ref.split("/", 3)
        node = spec["components"][kind][name]
        components.setdefault(kind, {})[name] = node
        found: set[str] = set()
        _refs(node, found)
        todo |= found - done
    for kind in components:
        components[kind] = dict(sorted(components[kind].items()))
    return {
        "openapi": spec["openapi"],
        "info": {**spec["info"], "description": "Cut from openai/openai-openapi (MIT licence, see "
                 "openai_openapi_LICENSE) to the routes realizar-ort serves, by bench/openapi_cut.py."},
        "servers": [{"url": "http://127.0.0.1:8000/v1"}],
        "paths": paths,
        "components": components,
    }


if __name__ == "__main__":
    source = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    OUT.write_text(json.dumps(cut(source), indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")
