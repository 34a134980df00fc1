"""Where the memory limit comes from: the cgroup hierarchy (v1 and v2), else the machine."""

from __future__ import annotations

from pathlib import Path

from retrieval.memory import _limit_in, memory_cgroup_dirs, memory_limit_bytes


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
