"""Where the memory limit comes from: the cgroup hierarchy (v1 and v2), else the machine."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import pytest

from retrieval.memory import (
    _limit_in,
    drop_mapped_pages,
    memory_cgroup_dirs,
    memory_limit_bytes,
    rss_mb,
)

pytestmark = pytest.mark.unit


def test_cgroup_dirs_of_both_hierarchies(tmp_path: Path) -> None:
    proc = tmp_path / "cgroup"
    proc.write_text("12:memory:/pods/svc\n3:cpu,cpuacct:/pods/svc\n0::/pods/svc\n")
    v2, v1 = memory_cgroup_dirs(proc)
    assert v2 == Path("/sys/fs/cgroup/pods/svc")
    assert v1 == Path("/sys/fs/cgroup/memory/pods/svc")
    proc.write_text("0::/\n")
    assert memory_cgroup_dirs(proc) == (Path("/sys/fs/cgroup"), None)
    assert memory_cgroup_dirs(tmp_path / "missing") == (None, None)


def test_the_smallest_limit_up_the_hierarchy_wins_and_no_limit_is_ignored(tmp_path: Path) -> None:
    top = tmp_path / "memory"
    leaf = top / "pods" / "svc"
    leaf.mkdir(parents=True)
    (top / "memory.limit_in_bytes").write_text(str(2**63 - 4096))  # v1's "no limit"
    (top / "pods" / "memory.limit_in_bytes").write_text(str(2 << 30))
    (leaf / "memory.limit_in_bytes").write_text(str(3 << 30))
    assert _limit_in(leaf, top, "memory.limit_in_bytes") == 2 << 30
    (top / "pods" / "memory.limit_in_bytes").write_text(str(2**63 - 4096))
    assert _limit_in(leaf, top, "memory.limit_in_bytes") == 3 << 30
    (leaf / "memory.max").write_text("max\n")  # v2's "no limit"
    assert _limit_in(leaf, top, "memory.max") is None


def test_this_process_has_a_positive_limit_no_larger_than_the_machine() -> None:
    total = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    assert 0 < memory_limit_bytes() <= total


def test_dropping_mapped_pages_keeps_shared_data_and_leaves_other_files_mapped(
    tmp_path: Path,
) -> None:
    """What a swap does to the old shard's files before closing it: the pages leave this
    process's page tables, and what was written through the mapping stays."""
    shard, other = tmp_path / "shard", tmp_path / "other"
    shard.mkdir()
    other.mkdir()
    size = 8 << 20
    maps = []
    for path in (shard / "vectors.dat", other / "vectors.dat"):
        with open(path, "wb") as fh:
            fh.truncate(size)
        with open(path, "r+b") as fh:
            maps.append(mmap.mmap(fh.fileno(), size))  # MAP_SHARED
    for m in maps:
        m[:] = b"\x07" * size  # dirty every page
    odd = shard / os.fsdecode(b"segment-\xff.dat")  # not UTF-8: /proc/self/maps is bytes
    with open(odd, "wb") as fh:
        fh.truncate(4096)
    with open(odd, "r+b") as fh:
        odd_map = mmap.mmap(fh.fileno(), 4096)
    odd_map[0] = 1
    before = rss_mb("RssFile")
    assert drop_mapped_pages(shard) == size + 4096
    assert odd_map[0] == 1
    odd_map.close()
    assert rss_mb("RssFile") <= before - 7  # MB: the shard's 8 MB left the page tables
    assert maps[0][:4] == b"\x07" * 4 and maps[0][-1] == 7  # faults back in, intact
    maps[0].close()
    assert (shard / "vectors.dat").read_bytes() == b"\x07" * size  # the file holds it
    assert drop_mapped_pages(tmp_path / "missing") == 0
    assert maps[1][size // 2] == 7
    maps[1].close()
