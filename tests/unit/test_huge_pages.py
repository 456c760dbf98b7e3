"""new_memory_on_huge_pages: memory allocated inside the block ends up on 2 MiB pages (Linux THP)."""

from __future__ import annotations

import ctypes
import errno
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


SIZE = 64 << 20
_libc = ctypes.CDLL(None)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS = 0x1 | 0x2, 0x02 | 0x20


@contextmanager
def _mapped() -> Iterator[list[int]]:
    """Fresh private anonymous mappings, as malloc makes for onnxruntime's large weight buffers (numpy
    arrays would not do: numpy asks for huge pages on its own)."""
    addresses: list[int] = []
    try:
        yield addresses
    finally:
        for address in addresses:
            _libc.munmap(address, SIZE)


def _allocate_and_touch(addresses: list[int]) -> int:
    address = _libc.mmap(None, SIZE, PROT_READ_WRITE, MAP_PRIVATE_ANONYMOUS, -1, 0)
    assert address not in (None, ctypes.c_void_p(-1).value)
    addresses.append(address)
    ctypes.memset(address, 7, SIZE)  # fault every page in, as loading weights does
    return address


def _huge_kib(address: int) -> int:
    return _huge_kib_within(address, address + SIZE)


@pytest.mark.skipif(_thp_mode() != "madvise", reason="needs Linux with transparent huge pages in 'madvise' mode")
def test_memory_loaded_inside_the_block_is_moved_to_huge_pages() -> None:
    with _mapped() as addresses:
        probe = _allocate_and_touch(addresses)
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        if libc.madvise(probe, SIZE, 14) != 0:  # MADV_HUGEPAGE itself refused (a kernel built without it)
            pytest.skip(f"this kernel refuses MADV_HUGEPAGE (errno {ctypes.get_errno()})")
        with new_memory_on_huge_pages(enabled=False):
            plain = _allocate_and_touch(addresses)
        assert _huge_kib(plain) == 0  # 'madvise' mode: 4 KiB pages without the advice

        with new_memory_on_huge_pages() as report:
            weights = _allocate_and_touch(addresses)
        assert report.advised_bytes >= SIZE - (4 << 20)  # all of the new mapping's 2 MiB-aligned interior
        assert report.advised_bytes <= SIZE + (4 << 20)  # and nothing from before the block
        assert _huge_kib(plain) == 0  # memory from before the block is left alone
        assert ctypes.string_at(weights + SIZE // 2, 4096) == b"\x07" * 4096  # contents intact
        if report.collapse_errors:  # kernel < 6.1 (EINVAL) or no free 2 MiB pages right now (EAGAIN/ENOMEM)
            assert _kernel_version() < (6, 1) or set(report.collapse_errors) <= {errno.EAGAIN, errno.ENOMEM}
            pytest.skip(f"MADV_COLLAPSE refused here ({report.collapse_errors[:3]}): pages turn huge later")
        assert report.collapsed_bytes == report.advised_bytes
        assert _huge_kib(weights) >= (report.collapsed_bytes >> 10)  # every collapsed range is on huge pages
