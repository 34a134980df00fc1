"""How much memory this process holds and may hold: /proc and the memory cgroup.

The embedded index is memory-mapped, so what fits is set by the page cache the process
may use: a container's memory limit (its cgroup, page cache included) or the machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from collections.abc import Callable
from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_MADV_DONTNEED = 4


def _proc_kb(path: str, field: str) -> int:
    """A `Field:  N kB` line of a /proc file, in kB (0 when absent)."""
    with open(path) as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mb(field: str = "VmRSS") -> float:
    """A memory figure of this process from /proc, in MB: VmRSS all resident pages, VmHWM
    their peak, RssAnon the heap alone, RssFile mapped file pages (page cache, which the
    kernel can take back: the memory-mapped index lives there)."""
    return _proc_kb("/proc/self/status", field) / 1024


def memory_cgroup_dirs(
    proc_cgroup: Path = Path("/proc/self/cgroup"),
) -> tuple[Path | None, Path | None]:
    """This process's memory cgroup directory under cgroup v2 and under v1's memory
    controller (None where that hierarchy does not hold it)."""
    v2 = v1 = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        num, controllers, path = line.split(":", 2)
        if num == "0" and not controllers:
            v2 = _CGROUP_ROOT / path.lstrip("/")
        if "memory" in controllers.split(","):
            v1 = _CGROUP_ROOT / "memory" / path.lstrip("/")
    return v2, v1


def _limit_in(directory: Path, top: Path, name: str) -> int | None:
    """The smallest limit set on `directory` or an ancestor up to `top` (a child cgroup
    may not use more than its parents)."""
    found = None
    d = directory
    while True:
        try:
            text = (d / name).read_text().strip()
        except OSError:
            text = ""
        if text.isdigit() and int(text) < 2**60:  # v1 writes ~2**63 for "no limit"
            found = int(text) if found is None else min(found, int(text))
        if d == top or d.parent == d:
            return found
        d = d.parent


def memory_limit_bytes() -> int:
    """What this process may hold in RAM and page cache: its memory cgroup's limit where
    one is set, else the machine's memory."""
    limits = [_proc_kb("/proc/meminfo", "MemTotal") * 1024]
    v2, v1 = memory_cgroup_dirs()
    if v2 is not None:
        limits.append(_limit_in(v2, _CGROUP_ROOT, "memory.max"))
    if v1 is not None:
        limits.append(_limit_in(v1, _CGROUP_ROOT / "memory", "memory.limit_in_bytes"))
    return min(limit for limit in limits if limit is not None)


def _madvise() -> Callable[[int, int, int], int]:
    fn = ctypes.CDLL(None, use_errno=True).madvise
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def trim_heap() -> None:
    """glibc keeps freed heap (a closed shard's, a build step's); hand it back to the
    system so RSS reflects what is in use. A ctypes call: it runs without the GIL."""
    with contextlib.suppress(Exception):  # not glibc
        ctypes.CDLL(None).malloc_trim(0)


def drop_mapped_pages(directory: Path) -> int:
    """Takes this process's shared file mappings under `directory` out of its page tables
    (`madvise(MADV_DONTNEED)`); returns the bytes of mappings advised.

    For a shard about to be closed. Edge's close unmaps its files with the GIL held, and
    tearing down the page tables of gigabytes of mapped index was most of that pause
    (1M points, optimised: close 309 ms, 62 ms after this). Here the work happens in a
    ctypes call, which releases the GIL. Safe for shared file mappings only: the pages
    stay in the page cache (dirty ones are still written back) and fault in again on
    the next access; private mappings are left alone, as dropping them loses changes.
    """
    prefix = os.fsencode(str(directory.resolve()) + os.sep)  # paths are bytes in maps
    ranges = []
    try:
        lines = Path("/proc/self/maps").read_bytes().splitlines()
    except OSError:
        return 0
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[1][3:4] == b"s" and parts[5].startswith(prefix):
            start, end = (int(x, 16) for x in parts[0].split(b"-"))
            ranges.append((start, end - start))
    madvise = _madvise()
    for start, size in ranges:
        madvise(start, size, _MADV_DONTNEED)
    return sum(size for _, size in ranges)
