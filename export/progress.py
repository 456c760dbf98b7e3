"""Stage-by-stage progress for long exports: what is running, and how long each stage took."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["Stages"]


class Stages:
    def __init__(self, title: str) -> None:
        self.title = title
        self.started = time.perf_counter()
        print(f"[realizar-ort] {title}", file=sys.stderr, flush=True)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        print(f"  - {name} ...", file=sys.stderr, flush=True)
        yield
        print(f"    {name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        print(f"  = {text} ({time.perf_counter() - self.started:.1f}s total)", file=sys.stderr, flush=True)
