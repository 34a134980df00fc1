"""The embedded index at scale: Qdrant Edge with 100k–1M chunks, before and after optimising.

In-process, through `EdgeIndex` (the service's schema, payload indexes and search code),
per size:

- upsert points/s (batches of 256, as the ingest worker writes them);
- hybrid / dense / sparse p50/p99 with the tenant + ACL filter the API applies (the
  tenant holds a quarter of the points): first on the shard as loaded (the baseline:
  nothing optimised, what `main` served before the optimiser), then after the cycles;
- then the shard is reopened the way a service meets one that a version before the
  optimiser filled (no op log, no spare), and three cycles run: the upgrade's first, one
  from the child's copy, and one after 10 % new points. For each: its time, and the
  longest wait a query thread (hybrid, one due every 50 ms) and a write thread (8 points
  due every 50 ms) saw while it ran, counted from when each call was due (a stall between
  calls counts), plus the swap's own pauses;
- the other way to meet that upgrade, `freshrag optimize` with the service stopped (on a
  copy of the bulk-loaded shard, every core): its time, then the service opening the
  result and one cycle after +20k points, with the same probes;
- recall@10 of the optimised dense search (HNSW + int8 with rescoring, as served) against
  exact search (`SearchParams(exact=True)`) on the same shard and queries, and the same
  without quantization, to separate the two;
- RSS of this process (VmRSS, and the heap alone) after loading and after the cycles; the
  child's peak RSS;
- the whole service under a memory limit: a fresh process inside a memory cgroup of
  `--memory-limit-mb` (page cache included; skipped where no cgroup may be made), the
  shard's files evicted first, opens the shard as the service does, adds 20k points and
  runs one cycle (its child in the same group) with the probes beside it: the group's
  peak, how often it hit the limit, the waits and latencies before and after;
- RSS and latencies of a fresh process serving the shard, once inside such a cgroup
  (files evicted: a first pass on the cold cache, then after 1,000 other queries) and
  once without.

Vectors with real structure: ~2k real Django doc chunks embedded with MiniLM, each point a
noisy mix of two of them (cosine ≈ 0.85 to its main chunk), its text and BM25 terms those
of its main chunk. Queries: the opening words of 200 held-out chunks.

    .venv/bin/python -m bench.scale [--sizes 100000,500000,1000000] [--queries 200]

Writes bench/results/scale.json. Needs about 15 GB of free disk and, at 1M, ~20 GB RAM
while the upgrade's rebuild runs in the child (16 GB at its peak, mapped pages included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from bench._scale_material import Material
from bench._scale_measure import (
    CYCLE_POINTS,
    add_points,
    bench_tuning,
    dense_ids,
    fmt,
    fmt_cycle,
    latencies,
    recall,
    run_cycle,
)
from bench._scale_probes import fresh_process, limited_cycle
from bench.harness import RESULTS, loadavg, write
from freshrag.settings import Settings
from retrieval.memory import rss_mb
from retrieval.store.edge.adapter import EdgeIndex
from retrieval.store.edge.tuning import EdgeTuning
from retrieval.store.edge.upgrade import upgrade_offline


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def run_size(n: int, m: Material, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    cycles, limit_mb = args.cycles, args.memory_limit_mb
    rng = np.random.default_rng(n)
    root = workdir / f"edge-{n}"
    tuning = bench_tuning()
    index = EdgeIndex(root, "chunks", "documents", tuning=tuning)
    index.ensure_schema(m.dim)
    res: dict[str, Any] = {"points": n, "loadavg_start": loadavg()}
    print(f"\n== {n:,} points", flush=True)

    t0 = time.monotonic()
    add_points(index, m, 0, n, rng)
    res["upsert_points_per_s"] = n / (time.monotonic() - t0)
    res["rss_loaded_mb"] = rss_mb()
    print(f"upsert {res['upsert_points_per_s']:,.0f} points/s, RSS {res['rss_loaded_mb']:,.0f} MB")
    res["baseline"] = latencies(index, m)
    print("baseline (unoptimised):", fmt(res["baseline"]))
    index.close()
    if args.offline_upgrade:
        res["offline_upgrade"] = offline_upgrade(root, workdir / f"edge-{n}-offline", m, tuning)
    index = reopen_as_upgrade(root, tuning, m.dim, res)

    res["cycles"] = []
    next_id = n
    for c in range(cycles):
        if c:  # later cycles: the steady state, a batch of new points since the last one
            next_id = add_points(index, m, next_id, min(CYCLE_POINTS, n // 10), rng)
        cyc, next_id = run_cycle(index, m, next_id, rng)
        res["cycles"].append(cyc)
        print(f"cycle {c + 1}: {fmt_cycle(cyc)}", flush=True)

    res["optimised"] = latencies(index, m)
    print("optimised:", fmt(res["optimised"]))
    res["rss_optimised_mb"] = rss_mb()
    res["rss_optimised_anon_mb"] = rss_mb("RssAnon")
    exact = dense_ids(index, m, qe.SearchParams(exact=True))
    served = dense_ids(index, m, index._search_params)
    unquantized = qe.SearchParams(
        hnsw_ef=tuning.search_ef, quantization=qe.QuantizationSearchParams(ignore=True)
    )
    res["recall_at_10"] = recall(served, exact)
    res["recall_at_10_no_quantization"] = recall(dense_ids(index, m, unquantized), exact)
    # How recall and dense latency move with the beam width (and with ACORN, Qdrant's
    # filtered-search variant), to choose FRESHRAG_EDGE_SEARCH_EF.
    served_q = index._search_params.quantization if index._search_params else None
    res["recall_by_ef"] = {}
    for ef in (64, 128, 256, 512):
        for acorn in (False, True):
            params = qe.SearchParams(
                hnsw_ef=ef,
                quantization=served_q,
                acorn=qe.AcornSearchParams(enable=True) if acorn else None,
            )
            t0 = time.perf_counter()
            got = dense_ids(index, m, params)
            ms = (time.perf_counter() - t0) * 1000 / len(got)
            res["recall_by_ef"][f"{ef}{'+acorn' if acorn else ''}"] = {
                "recall": recall(got, exact),
                "mean_ms": ms,
            }
    print(
        "recall@10 by ef: "
        + ", ".join(
            f"{k} {v['recall']:.3f} ({v['mean_ms']:.1f} ms)" for k, v in res["recall_by_ef"].items()
        )
    )
    info = index.chunks.info()
    res["segments"] = info.segments_count
    res["total_points"] = info.points_count
    res["disk_mb_live"] = du_mb(index._chunks.live_path)
    res["loadavg_end"] = loadavg()
    print(
        f"recall@10 vs exact {res['recall_at_10']:.4f} (without int8: "
        f"{res['recall_at_10_no_quantization']:.4f}); RSS {res['rss_optimised_mb']:,.0f} MB "
        f"(heap {res['rss_optimised_anon_mb']:,.0f} MB); "
        f"{res['segments']} segments; load average {res['loadavg_end']}",
        flush=True,
    )
    index.close()
    if limit_mb:
        res["cycle_limited"] = lc = limited_cycle(root, args, next_id, limit_mb)
        if "skipped" not in lc:
            print(
                f"a fresh process under a {limit_mb:,} MB memory limit, +{CYCLE_POINTS:,} "
                f"points and one cycle: group peak {lc['cgroup_peak_mb']:,.0f} MB, limit hit "
                f"{lc['limit_hits']} times; before {fmt(lc['latency_before'])}; cycle "
                f"{fmt_cycle(lc['cycle'])}; after {fmt(lc['latency_after'])}",
                flush=True,
            )
        res["fresh_process_limited"] = lim = fresh_process(root, m, limit_mb)
        if "skipped" in lim:
            print(f"under a {limit_mb:,} MB memory limit: skipped, {lim['skipped']}")
        else:
            print(
                f"a fresh process under a {limit_mb:,} MB memory limit (page cache included): "
                f"RSS {lim['rss_mb']:,.0f} MB (heap {lim['rss_anon_mb']:,.0f} MB), group "
                f"peak {lim['cgroup_peak_mb']:,.0f} MB; first pass "
                f"on a cold cache {fmt(lim['latency_cold'])}; after {lim['warmup_queries']} "
                f"other queries {fmt(lim['latency'])}",
                flush=True,
            )
    res["fresh_process"] = fresh_process(root, m)
    print(
        f"a fresh process serving it: RSS {res['fresh_process']['rss_mb']:,.0f} MB (heap "
        f"{res['fresh_process']['rss_anon_mb']:,.0f} MB), "
        f"{fmt(res['fresh_process']['latency'])}",
        flush=True,
    )
    if args.keep:
        print(f"kept the shard in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return res


def offline_upgrade(root: Path, copy: Path, m: Material, tuning: EdgeTuning) -> dict[str, Any]:
    """The other way to meet an upgrade: `freshrag optimize` with the service stopped, on
    a copy of the bulk-loaded shard (as a version before the optimiser leaves it), then
    the service opens the result and runs one cycle after +20k points with the probes."""
    shutil.rmtree(copy, ignore_errors=True)  # left by an aborted run
    shutil.copytree(root / "chunks", copy / "chunks")
    out: dict[str, Any] = {"loadavg_start": loadavg()}
    t0 = time.monotonic()
    done = upgrade_offline(copy, "chunks", tuning)  # threads: every core, as the command
    out["upgrade_s"] = time.monotonic() - t0
    out["upgrade_optimize_s"] = done["optimize_s"]
    out["rebuilt"] = done["rebuilt"]
    # This process's peak so far, the bulk load before included (mapped pages too).
    out["peak_rss_mb"] = rss_mb("VmHWM")
    t0 = time.monotonic()
    index = EdgeIndex(copy, "chunks", "documents", tuning=tuning)
    index.ensure_schema(m.dim)
    out["startup_s"] = time.monotonic() - t0
    n = index.count_chunks([])
    rng = np.random.default_rng(n + 1)
    next_id = add_points(index, m, n, CYCLE_POINTS, rng)
    out["cycle"], _ = run_cycle(index, m, next_id, rng)
    index.close()
    shutil.rmtree(copy, ignore_errors=True)
    print(
        f"offline upgrade (freshrag optimize, service stopped): {out['upgrade_s']:.0f} s "
        f"(optimize() {out['upgrade_optimize_s']:.0f} s), then the service opens it in "
        f"{out['startup_s']:.1f} s; +{CYCLE_POINTS:,} points and a cycle: "
        f"{fmt_cycle(out['cycle'])}",
        flush=True,
    )
    return out


def reopen_as_upgrade(root: Path, tuning: EdgeTuning, dim: int, res: dict[str, Any]) -> EdgeIndex:
    """Opens the (closed) bulk-loaded index the way the service meets a shard that a
    version without the optimiser filled: one unoptimised shard on disk, no op log and no
    spare. Opening copies the shard to the spare before any traffic; the first cycle then
    optimises that copy. (A shard that this version filled never holds so many
    unoptimised points: its optimiser starts a cycle every `optimize_after_points`.)"""
    shutil.rmtree(root / "chunks.b", ignore_errors=True)
    for path in [root / "chunks.edge-state.json", *root.glob("chunks.oplog.*")]:
        path.unlink()
    t0 = time.monotonic()
    index = EdgeIndex(root, "chunks", "documents", tuning=tuning)
    index.ensure_schema(dim)
    res["startup_s"] = time.monotonic() - t0
    res["rss_reopened_mb"] = rss_mb()
    print(
        f"reopened as an upgrade: {res['startup_s']:.1f} s to open it and copy the spare "
        f"(before traffic), RSS {res['rss_reopened_mb']:,.0f} MB",
        flush=True,
    )
    return index


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sizes", default="100000", help="comma-separated point counts")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--base", type=int, default=2000, help="real chunks the points derive from")
    ap.add_argument(
        "--cycles",
        type=int,
        default=3,
        help="optimiser cycles per size: the 1st and 2nd build each copy of the shard in "
        "full, the 3rd shows the steady state (new points since the last cycle)",
    )
    ap.add_argument("--workdir", type=Path, default=None, help="scratch dir (default: a tmp dir)")
    ap.add_argument(
        "--keep", action="store_true", help="keep each size's shard (under --workdir) to inspect"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    ap.add_argument("--append", action="store_true", help="keep the other sizes already in --out")
    ap.add_argument(
        "--memory-limit-mb",
        type=int,
        default=2500,
        help="also serve the optimised shard from a fresh process inside a memory cgroup of "
        "this size, page cache included (0: skip; skipped where no cgroup may be made)",
    )
    ap.add_argument(
        "--offline-upgrade",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time `freshrag optimize` on a copy of the bulk-loaded shard, and one cycle "
        "after it (needs the shard's size again in disk)",
    )
    args = ap.parse_args()
    if args.queries > 200:
        ap.error("--queries: at most 200")
    sizes = [int(s) for s in args.sizes.split(",")]
    m = Material(args.base, args.queries)
    print(f"{len(m.texts)} base chunks, {len(m.query_vectors)} queries ready in {m.embed_s:.1f} s")
    workdir = Path(tempfile.mkdtemp(prefix="freshrag-scale-", dir=args.workdir))
    report: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count()},
        "filter": "tenant t0 (1/4 of the points) and acl any of [public] (4/5 of those)",
        "settings": {k: v for k, v in Settings().model_dump().items() if k.startswith("edge_")},
        "sizes": [],
    }
    if args.append and args.out.exists():  # add to (or redo sizes of) an earlier run
        previous = json.loads(args.out.read_text())
        report["sizes"] = [r for r in previous["sizes"] if r["points"] not in sizes]
    try:
        for n in sizes:
            report["sizes"].append(run_size(n, m, workdir, args))
            report["sizes"].sort(key=lambda r: r["points"])
            write(report, args.out, echo=False)  # each size as soon as it is done
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
