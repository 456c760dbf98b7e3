"""Export cache: exported folders keyed by the source's checksum and the exporter's versions.

A fresh clone (CI, a newcomer's second checkout) restores a verified export instead of redoing it.
``REALIZAR_CACHE_DIR`` overrides the location (default ``~/.cache/realizar-ort``); an empty cache only
means a slower run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from realizar_ort.manifest import MANIFEST_FILE

__all__ = ["cache_dir", "key", "restore", "store", "up_to_date"]

EXPORT_FORMAT = "8"  # bump when the exporter's output changes (8: Llama 3 template in Meta's structure; 6 is burnt)


def cache_dir() -> Path:
    return Path(os.environ.get("REALIZAR_CACHE_DIR", Path.home() / ".cache" / "realizar-ort")) / "exports"


def key(source_sha256: str, variant: str) -> str:
    from .verify import exporter_versions

    versions = json.dumps(exporter_versions(), sort_keys=True)
    return hashlib.sha256(f"{source_sha256}|{variant}|{EXPORT_FORMAT}|{versions}".encode()).hexdigest()[:24]


def _verified_key(folder: Path) -> str | None:
    try:
        data = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, ValueError):
        return None
    verification = data.get("verification", {})
    return verification.get("cache_key") if verification.get("passed") else None


def up_to_date(out: Path, cache_key: str) -> str | None:
    """``out`` already holds a verified export of this exact source and exporter."""
    return "existing export matches" if _verified_key(out) == cache_key else None


def restore(out: Path, cache_key: str) -> str | None:
    cached = cache_dir() / cache_key
    if _verified_key(cached) != cache_key:
        return None
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(cached, out)
    return f"restored from cache {cached}"


def store(out: Path, cache_key: str) -> None:
    target = cache_dir() / cache_key
    tmp = target.with_name(target.name + ".tmp")
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(out, tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    except OSError:  # a full disk or read-only home only costs the next run time
        shutil.rmtree(tmp, ignore_errors=True)
