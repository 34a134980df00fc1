"""bench.scale's fresh processes: a new process serving the shard, or running one optimiser
cycle, optionally inside a memory cgroup with the shard's files evicted first.

Each probe runs as `python -m bench._scale_probes --serve-probe|--cycle-probe ...` and
prints one JSON line last; bench.scale starts them with `fresh_process` and
`limited_cycle`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from bench._scale_material import Material, warmup_queries
from bench._scale_measure import (
    CYCLE_POINTS,
    FILTER,
    add_points,
    bench_tuning,
    latencies,
    run_cycle,
    timed_pass,
)
from bench.harness import child_env, module_command
from freshrag.settings import Settings
from retrieval.memory import memory_cgroup_dirs, rss_mb
from retrieval.store.edge.adapter import EdgeIndex
from retrieval.store.edge.tuning import EdgeTuning
from retrieval.store.types import SparseVec


@contextmanager
def memory_cgroup(limit_mb: int) -> Iterator[Path | None]:
    """A memory cgroup (v2, or v1's memory controller) under this process's own, limited
    to `limit_mb` page cache included; None where this process may not make one."""
    v2, v1 = memory_cgroup_dirs()
    group = None
    try:
        if v1 is not None and (v1 / "memory.limit_in_bytes").exists():
            group = v1 / f"freshrag-scale-{os.getpid()}"
            group.mkdir()
            (group / "memory.limit_in_bytes").write_text(str(limit_mb * 2**20))
        elif v2 is not None and "memory" in (v2 / "cgroup.subtree_control").read_text():
            group = v2 / f"freshrag-scale-{os.getpid()}"
            group.mkdir()
            (group / "memory.max").write_text(str(limit_mb * 2**20))
    except OSError:
        group = None
    try:
        yield group
    finally:
        if group is not None:
            time.sleep(0.5)  # the probe has exited; its group empties
            with contextlib.suppress(OSError):
                group.rmdir()


def probe_process(command: list[str], limit_mb: int | None) -> dict[str, Any]:
    """Runs a probe (`command` prints one JSON line last) as a new process; with
    `limit_mb` inside a memory cgroup of that size, with the group's peak usage (page
    cache included) and how often it hit the limit."""
    with ExitStack() as stack:
        join = group = None
        if limit_mb is not None:
            group = stack.enter_context(memory_cgroup(limit_mb))
            if group is None:
                return {"skipped": "no memory cgroup may be made here"}
            command = [*command, "--evict"]
            procs = group / "cgroup.procs"

            def join() -> None:
                procs.write_text(str(os.getpid()))

        out = subprocess.run(
            command, check=True, capture_output=True, text=True, preexec_fn=join, env=child_env()
        ).stdout
        result = json.loads(out.strip().splitlines()[-1])
        if group is not None:
            result.update(limit_mb=limit_mb, **cgroup_peak(group))
    return result


def cgroup_peak(group: Path) -> dict[str, float]:
    """Peak memory (page cache included) of a cgroup and how many times it hit its limit."""
    if (group / "memory.max_usage_in_bytes").exists():  # v1
        peak = int((group / "memory.max_usage_in_bytes").read_text())
        hits = int((group / "memory.failcnt").read_text())
    else:  # v2 (memory.peak needs Linux 5.19)
        peak_file = group / "memory.peak"
        peak = int(peak_file.read_text()) if peak_file.exists() else 0
        events = dict(line.split() for line in (group / "memory.events").read_text().splitlines())
        hits = int(events.get("max", 0))
    return {"cgroup_peak_mb": peak / 2**20, "limit_hits": hits}


def fresh_process(
    root: Path, m: Material, limit_mb: int | None = None, warmup: int = 1000
) -> dict[str, Any]:
    """RSS and latencies of a new process that opens the optimised shard and serves the
    queries: what a restarted service holds (this one still carries the baseline's heap).

    With `limit_mb`, inside a memory cgroup of that size, the shard's files evicted from
    the page cache first so that every page it reads counts against the limit. The probe
    then times the measured queries twice: first on the cold cache (what the first
    queries after a restart see), then after `warmup` other queries (the steady state
    that the limit has to hold), with the major page faults of each pass.
    """
    warm_dense, warm_sparse = warmup_queries(m, warmup)
    with tempfile.NamedTemporaryFile("w", suffix=".json") as fh:
        json.dump(
            {
                "dim": m.dim,
                "dense": m.query_vectors,
                "sparse": [[q.indices, q.values] for q in m.query_sparse],
                "warm_dense": warm_dense,
                "warm_sparse": [[q.indices, q.values] for q in warm_sparse],
            },
            fh,
        )
        fh.flush()
        return probe_process(
            module_command(__name__, "--serve-probe", str(root), fh.name), limit_mb
        )


def limited_cycle(
    root: Path, args: argparse.Namespace, next_id: int, limit_mb: int
) -> dict[str, Any]:
    """The whole service's memory under the limit: a new process in a memory cgroup of
    `limit_mb` (the shard's files evicted first) opens the optimised shard as the
    service does, adds `CYCLE_POINTS` points and runs one optimiser cycle, its child
    inside the same group, with the probes beside it."""
    command = module_command(
        __name__, "--cycle-probe", str(root), str(next_id),
        "--base", str(args.base), "--queries", str(args.queries),
    )  # fmt: skip
    return probe_process(command, limit_mb)


def cycle_probe(root: Path, next_id: int, m: Material, evict_first: bool) -> None:
    if evict_first:
        evict(root)
    t0 = time.monotonic()
    index = EdgeIndex(root, "chunks", "documents", tuning=bench_tuning())
    index.ensure_schema(m.dim)
    open_s = time.monotonic() - t0
    rng = np.random.default_rng(next_id)
    next_id = add_points(index, m, next_id, CYCLE_POINTS, rng)
    before = latencies(index, m)
    cyc, _ = run_cycle(index, m, next_id, rng)
    after = latencies(index, m)
    rss, anon = rss_mb(), rss_mb("RssAnon")
    index.close()
    out = {"open_s": open_s, "latency_before": before, "cycle": cyc, "latency_after": after}
    print(json.dumps({**out, "rss_mb": rss, "rss_anon_mb": anon}))


def evict(root: Path) -> None:
    """Drops the shard's files from the page cache (clean pages: nothing is lost)."""
    for path in root.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def serve_probe(root: Path, queries: Path, evict_first: bool) -> None:
    q = json.loads(queries.read_text())
    if evict_first:
        evict(root)
    tuning = EdgeTuning.from_settings(Settings(edge_optimizer="off"))
    index = EdgeIndex(root, "chunks", "documents", tuning=tuning)
    t0 = time.monotonic()
    index.ensure_schema(q["dim"])
    open_s = time.monotonic() - t0
    dense, sparse = q["dense"], [SparseVec(i, v) for i, v in q["sparse"]]
    cold = timed_pass(index, dense, sparse)
    t0 = time.monotonic()
    for dv, (idx, vals) in zip(q["warm_dense"], q["warm_sparse"], strict=True):
        index.search("hybrid", dv, SparseVec(idx, vals), FILTER, 10)
    warmup_s = time.monotonic() - t0
    lat = timed_pass(index, dense, sparse)
    rss, anon = rss_mb(), rss_mb("RssAnon")
    index.close()
    print(
        json.dumps(
            {
                "open_s": open_s,
                "rss_mb": rss,
                "rss_anon_mb": anon,
                "latency_cold": cold,
                "warmup_queries": len(q["warm_dense"]),
                "warmup_s": warmup_s,
                "latency": lat,
            }
        )
    )


def main() -> None:
    """The probe side: what `fresh_process` and `limited_cycle` start."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--serve-probe", nargs=2, type=Path, metavar=("SHARD", "QUERIES"))
    ap.add_argument("--cycle-probe", nargs=2, metavar=("SHARD", "NEXT_ID"))
    ap.add_argument("--base", type=int, default=2000, help="as bench.scale's --base")
    ap.add_argument("--queries", type=int, default=200, help="as bench.scale's --queries")
    ap.add_argument("--evict", action="store_true", help="the shard's files out of the cache first")
    args = ap.parse_args()
    if args.serve_probe:
        serve_probe(*args.serve_probe, evict_first=args.evict)
    elif args.cycle_probe:
        root, next_id = args.cycle_probe
        m = Material(args.base, args.queries)
        cycle_probe(Path(root), int(next_id), m, evict_first=args.evict)
    else:
        ap.error("--serve-probe or --cycle-probe")


if __name__ == "__main__":
    main()
