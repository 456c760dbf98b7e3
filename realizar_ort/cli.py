"""The ``realizar-ort`` command: ``export``, ``serve`` and ``embed``.

Each subcommand's arguments live beside the code that runs it; this module only dispatches, importing
the subcommand's module lazily (``export`` needs torch, the others must not).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

__all__ = ["main"]

_SUBCOMMANDS = {
    "export": ("realizar_ort.export.cli", "export models to ONNX (needs the `export` extra: torch, optimum)"),
    "serve": ("realizar_ort.server.cli", "serve the OpenAI-compatible API (/v1/chat/completions, /v1/embeddings)"),
    "embed": ("realizar_ort.embeddings.batch", "embed a JSONL/CSV/Parquet/text file into Parquet, locally or on Ray"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="realizar-ort",
        description="realizar-ort: ONNX Runtime inference for agentic backends. Export Llama-architecture chat "
        "models and sentence embedders to ONNX, then serve them behind an OpenAI-compatible API with "
        "grammar-enforced JSON and tool calls.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{export,serve,embed}")
    for name, (module_name, help_text) in _SUBCOMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:  # an optional extra is missing: say which, at use time
            sub.set_defaults(_missing=f"`realizar-ort {name}` is unavailable: {exc}")
            continue
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if getattr(args, "_missing", None):
        print(args._missing, file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except ValueError as exc:  # our typed errors (config, manifest, source, request) are ValueErrors
        print(f"realizar-ort {args.command}: error: {exc}", file=sys.stderr)
        return 2
