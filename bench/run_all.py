"""`make bench`: run every benchmark in bench/ in one go, each printing its peers side by side."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHES = ["decode.py", "grammar.py", "embeddings.py", "server_load.py"]


def main() -> int:
    here = Path(__file__).resolve().parent
    failures = 0
    for name in BENCHES:
        path = here / name
        if not path.exists():
            print(f"== {name}: not present, skipped")
            continue
        print(f"== {name}", flush=True)
        failures += subprocess.run([sys.executable, str(path)], cwd=here.parent).returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
