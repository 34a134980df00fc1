"""How much memory this process holds and may hold: /proc and the memory cgroup.

The embedded index is memory-mapped, so what fits is set by the page cache the process
may use: a container's memory limit (its cgroup, page cache included) or the machine.
"""

from __future__ import annotations

from pathlib import Path

_CGROUP_ROOT = Path("/sys/fs/cgroup")


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
