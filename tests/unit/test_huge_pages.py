"""new_memory_on_huge_pages: memory allocated inside the block ends up on 2 MiB pages (Linux THP)."""

from __future__ import annotations

import ctypes
import platform
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from realizar_ort.huge_pages import new_memory_on_huge_pages

THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _thp_mode() -> str:
    if not sys.platform.startswith("linux") or not THP_MODE.exists():
        return "unavailable"
    text = THP_MODE.read_text()
    return text[text.index("[") + 1 : text.index("]")]


def _kernel_version() -> tuple[int, int]:
    major, minor = platform.release().split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _huge_kib_within(start: int, end: int) -> int:
    """AnonHugePages of the mappings lying inside [start, end)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo < end and hi > start
        elif head == "AnonHugePages:" and inside:
            total += int(line.split()[1])
    return total


SIZE = 64 << 20  # above glibc's largest mmap threshold: malloc gives it a mapping of its own
_libc = ctypes.CDLL(None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.free.argtypes = [ctypes.c_void_p]


@contextmanager
def _malloced() -> Iterator[list[int]]:
    """Plain malloc, as onnxruntime allocates weights (numpy would madvise huge pages by itself)."""
    addresses: list[int] = []
    try:
        yield addresses
    finally:
        for address in addresses:
            _libc.free(address)


def _allocate_and_touch(addresses: list[int]) -> int:
    address = _libc.malloc(SIZE)
    assert address
    addresses.append(address)
    ctypes.memset(address, 7, SIZE)  # fault every page in, as loading weights does
    return address


def _huge_kib(address: int) -> int:
    return _huge_kib_within(address, address + SIZE)


@pytest.mark.skipif(_thp_mode() != "madvise", reason="needs Linux with transparent huge pages in 'madvise' mode")
def test_memory_loaded_inside_the_block_is_moved_to_huge_pages() -> None:
    with _malloced() as addresses:
        with new_memory_on_huge_pages(enabled=False):
            plain = _allocate_and_touch(addresses)
        assert _huge_kib(plain) == 0  # 'madvise' mode: 4 KiB pages without the advice

        with new_memory_on_huge_pages():
            weights = _allocate_and_touch(addresses)
        huge = _huge_kib(weights)
        if huge == 0 and _kernel_version() < (6, 1):
            pytest.skip("Linux < 6.1 has no MADV_COLLAPSE: pages turn huge later, in the background")
        assert huge >= (SIZE >> 10) // 2  # most of it, whatever the alignment of the mapping
        assert ctypes.string_at(weights + SIZE // 2, 4096) == b"\x07" * 4096  # contents moved intact
        assert _huge_kib(plain) == 0  # memory from before the block is left alone
