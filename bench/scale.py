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

    .venv/bin/python bench/scale.py [--sizes 100000,500000,1000000] [--queries 200]

Writes bench/results/scale.json. Needs about 15 GB of free disk and, at 1M, ~20 GB RAM
while the upgrade's rebuild runs in the child (16 GB at its peak, mapped pages included).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: its ingest.py would shadow the ingest package

import qdrant_edge as qe  # noqa: E402

from freshrag.settings import Settings  # noqa: E402
from ingest.sample import django_docs, doc_files  # noqa: E402
from retrieval.edge import (  # noqa: E402
    DENSE,
    EdgeIndex,
    EdgeTuning,
    to_edge_filter,
    upgrade_offline,
)
from retrieval.encoders import DenseEncoder, SparseEncoder, SparseVec  # noqa: E402
from retrieval.index import ChunkPoint, Condition, Match, MatchAny  # noqa: E402
from retrieval.memory import memory_cgroup_dirs, rss_mb  # noqa: E402

TENANTS = 4
CYCLE_POINTS = 20_000  # new points before each steady-state cycle (at most 10 %)
STALL_S = 0.25  # probe waits longer than this are listed with their time
FILTER: list[Condition] = [Match("tenant", "t0"), MatchAny("acl", ("public",))]
MODES = ("hybrid", "dense", "sparse")


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) if values else 0.0


def du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


# --- material ----------------------------------------------------------------------------


def chunk_texts(limit: int) -> list[str]:
    """Django doc paragraphs packed into ~1,000-character chunks (what the chunker makes)."""
    docs = django_docs(Settings().sample_django_version, ROOT / "data" / "samples")
    out: list[str] = []
    for path in doc_files(docs):
        buf = ""
        for para in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            para = para.strip()
            if not para or set(para) <= set("=-~*^#"):
                continue
            buf = f"{buf}\n\n{para}" if buf else para
            if len(buf) >= 800:
                out.append(buf[:1500])
                buf = ""
        if len(out) >= limit:
            break
    return out[:limit]


def embed(texts: list[str], query_texts: list[str], cache: Path) -> None:
    """MiniLM vectors of the chunks and queries into `cache` (run in a child process, so
    torch and the model never count in the RSS this benchmark reports)."""
    dense = DenseEncoder("all-MiniLM-L6-v2", batch_size=64)
    np.savez(
        cache,
        vectors=np.asarray(dense.encode(texts), dtype=np.float32),
        queries=np.asarray(dense.encode(query_texts), dtype=np.float32),
    )


class Material:
    """Base chunk texts, their MiniLM vectors and BM25 terms, and the queries."""

    def __init__(self, base: int, queries: int) -> None:
        texts = chunk_texts(base + queries)
        if len(texts) < base + queries:
            raise SystemExit(f"only {len(texts)} chunks in the Django docs")
        self.texts, held_out = texts[:base], texts[base:]
        query_texts = [" ".join(t.split()[:12]) for t in held_out]
        digest = hashlib.sha256("\x00".join(texts + query_texts).encode()).hexdigest()[:16]
        cache = ROOT / "data" / "samples" / f"scale-minilm-{digest}.npz"
        t0 = time.monotonic()
        if not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            code = (
                "import sys, pathlib; sys.path.insert(0, sys.argv[1]); import json; "
                "from bench.scale import embed; a = json.load(open(sys.argv[2])); "
                "embed(a['texts'], a['queries'], pathlib.Path(sys.argv[3]))"
            )
            with tempfile.NamedTemporaryFile("w", suffix=".json") as fh:
                json.dump({"texts": self.texts, "queries": query_texts}, fh)
                fh.flush()
                subprocess.run(
                    [sys.executable, "-c", code, str(ROOT), fh.name, str(tmp)], check=True
                )
            os.replace(tmp, cache)
        saved = np.load(cache)
        self.vectors = saved["vectors"]
        self.query_vectors = [list(map(float, v)) for v in saved["queries"]]
        self.dim = int(self.vectors.shape[1])
        sparse = SparseEncoder()
        self.sparse = sparse.encode_documents(self.texts)
        self.query_sparse = [sparse.encode_query(q) for q in query_texts]
        self.embed_s = time.monotonic() - t0

    def points(self, start: int, n: int, rng: np.random.Generator) -> list[ChunkPoint]:
        """Points start..start+n: a mix of two base chunks plus noise, normalised."""
        ids = np.arange(start, start + n)
        main = ids % len(self.texts)
        other = (ids * 7919 + 13) % len(self.texts)
        v = self.vectors[main] + 0.3 * self.vectors[other]
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        v += rng.normal(0, 0.032, v.shape).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out = []
        for row, i, b in zip(v.tolist(), ids.tolist(), main.tolist(), strict=True):
            sp = self.sparse[b]
            out.append(
                ChunkPoint(
                    str(uuid.UUID(int=i + 1)),
                    row,
                    SparseVec(sp.indices, sp.values),
                    {
                        "tenant": f"t{i % TENANTS}",
                        "acl": ["sales"] if i % 5 == 0 else ["public"],
                        "doc_id": f"doc-{i // 12}",
                        "version": 1 + i % 3,
                        "chunk_index": i % 12,
                        "hash": f"h{i:08d}",
                        "title": f"Django doc {b}",
                        "text": self.texts[b],
                        "indexed_at": "2026-01-01T00:00:00Z",
                    },
                )
            )
        return out


# --- measurements ------------------------------------------------------------------------


def timed_pass(
    index: EdgeIndex, dense: list[list[float]], sparse: list[SparseVec]
) -> dict[str, dict[str, float]]:
    """Each mode over all queries: p50/p99 and major page faults (reads from disk) per query."""
    out = {}
    for mode in MODES:
        times = []
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
        for dv, sv in zip(dense, sparse, strict=True):
            t0 = time.perf_counter()
            index.search(mode, dv, sv, FILTER, 10)
            times.append((time.perf_counter() - t0) * 1000)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - faults
        out[mode] = {
            "p50_ms": pct(times, 50),
            "p99_ms": pct(times, 99),
            "major_faults_per_query": faults / len(times),
        }
    return out


def latencies(index: EdgeIndex, m: Material) -> dict[str, dict[str, float]]:
    return timed_pass(index, m.query_vectors, m.query_sparse)


def dense_ids(index: EdgeIndex, m: Material, params: qe.SearchParams | None) -> list[set[str]]:
    out = []
    for qv in m.query_vectors:
        req = qe.QueryRequest(
            limit=10,
            query=qe.Query.Nearest(qv, using=DENSE),
            filter=to_edge_filter(FILTER),
            params=params,
        )
        out.append({str(p.id) for p in index.chunks.query(req)})
    return out


def recall(got: list[set[str]], exact: list[set[str]]) -> float:
    return float(np.mean([len(g & e) / max(1, len(e)) for g, e in zip(got, exact, strict=True)]))


class Probes:
    """A query thread and a write thread running beside the optimiser: every call timed."""

    def __init__(self, index: EdgeIndex, m: Material, first_id: int, rng: np.random.Generator):
        self.index, self.m, self.next_id, self.rng = index, m, first_id, rng
        self.query_ms: list[float] = []
        self.write_ms: list[float] = []
        self.errors: list[str] = []
        self.stalls: list[tuple[float, float, str]] = []  # (s since start, ms, which)
        self._start = time.perf_counter()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._q, self._w)]

    def __enter__(self) -> Probes:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(60)

    def _paced(self, op: Any, out: list[float]) -> None:
        """Runs `op` every 50 ms and records the time from when it was due to when it
        returned, so a stall (e.g. the GIL held by a shard load) counts even when it hits
        the thread between two calls."""
        due = time.perf_counter()
        while not self._stop.is_set():
            due += 0.05
            delay = due - time.perf_counter()
            if delay > 0 and self._stop.wait(delay):
                return
            try:
                op()
            except Exception as exc:  # reported, not fatal
                self.errors.append(repr(exc))
            now = time.perf_counter()
            out.append((now - due) * 1000)
            if now - due > STALL_S:
                which = "query" if out is self.query_ms else "write"
                self.stalls.append((round(due - self._start, 2), round((now - due) * 1000), which))
            due = max(due, now - 0.05)  # no backlog after a stall: the next one is due now

    def _q(self) -> None:
        i = 0

        def query() -> None:
            nonlocal i
            qv, qs = self.m.query_vectors[i % 200], self.m.query_sparse[i % 200]
            self.index.search("hybrid", qv, qs, FILTER, 10)
            i += 1

        self._paced(query, self.query_ms)

    def _w(self) -> None:
        def write() -> None:
            self.index.upsert_chunks(self.m.points(self.next_id, 8, self.rng))
            self.next_id += 8

        self._paced(write, self.write_ms)

    def summary(self) -> dict[str, Any]:
        return {
            "queries": len(self.query_ms),
            "query_p50_ms": pct(self.query_ms, 50),
            "query_p99_ms": pct(self.query_ms, 99),
            "query_max_ms": max(self.query_ms, default=0.0),
            "writes": len(self.write_ms),
            "write_p50_ms": pct(self.write_ms, 50),
            "write_max_ms": max(self.write_ms, default=0.0),
            "errors": self.errors[:5],
            # When each wait over STALL_S began, in s from the cycle's start: compare with
            # swap_started_s to tell the swap's pauses from the rest of the cycle's.
            "stalls": sorted(sorted(self.stalls, key=lambda x: -x[1])[:40]),  # the 40 longest
        }


def bench_tuning() -> EdgeTuning:
    """The service's defaults (FRESHRAG_EDGE_*), with cycles started by this script."""
    return EdgeTuning.from_settings(
        Settings(edge_optimize_after_points=10**12, edge_optimize_interval_s=10**9)
    )


def add_points(index: EdgeIndex, m: Material, start: int, n: int, rng: np.random.Generator) -> int:
    """Upserts points start..start+n in the ingest worker's batches; returns the next id."""
    for i in range(start, start + n, 256):
        index.upsert_chunks(m.points(i, min(256, start + n - i), rng))
    return start + n


def run_cycle(
    index: EdgeIndex, m: Material, next_id: int, rng: np.random.Generator
) -> tuple[dict[str, Any], int]:
    """One optimiser cycle with the query and write probes beside it."""
    with Probes(index, m, next_id, rng) as probes:
        t0 = time.monotonic()
        stats = index.optimize(wait=True)
        wall = time.monotonic() - t0
        time.sleep(0.5)
    cyc = {"wall_s": wall, **stats, **probes.summary(), "loadavg": loadavg()}
    swap = sum(stats.get(k, 0.0) for k in ("load_s", "catch_up_s", "tail_s", "close_s"))
    cyc["swap_started_s"] = round(wall - swap - stats.get("drop_log_s", 0.0), 2)
    cyc["error"] = index.optimizer.last_error if index.optimizer else None
    return cyc, probes.next_id


def fmt_cycle(cyc: dict[str, Any]) -> str:
    return (
        f"{cyc['wall_s']:.1f} s (optimize() {cyc.get('optimize_s', 0):.1f} s in the child); "
        f"longest query {cyc['query_max_ms']:.0f} ms, write {cyc['write_max_ms']:.0f} ms; swap "
        f"from {cyc['swap_started_s']:.1f} s: load {cyc.get('load_s', 0) * 1000:.0f} ms, "
        f"catch-up {cyc.get('catch_up_s', 0) * 1000:.0f} ms ({cyc.get('catch_up_points', 0)} "
        f"points), tail {cyc.get('tail_s', 0) * 1000:.0f} ms (writes only), close "
        f"{cyc.get('close_s', 0) * 1000:.0f} ms, disk reads {cyc.get('major_faults')}"
        f"{rebuilt(cyc)}; waits over {STALL_S * 1000:.0f} ms at (s, ms): {cyc['stalls']}; "
        f"child peak RSS {cyc.get('child_peak_rss_mb', 0):,.0f} MB (heap "
        f"{cyc.get('child_rss_anon_mb', 0):,.0f} MB)"
    )


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


def warmup_queries(m: Material, n: int) -> tuple[list[list[float]], list[SparseVec]]:
    """Traffic that is not the measured queries, to bring a restarted process to its
    steady state: near a random base chunk (as the points are), its opening words as the
    keyword side. Warming with the measured queries themselves would cache exactly the
    pages they read."""
    rng = np.random.default_rng(7)
    picks = rng.integers(0, len(m.texts), n)
    v = m.vectors[picks] + 0.3 * m.vectors[rng.integers(0, len(m.texts), n)]
    v += rng.normal(0, 0.05, v.shape).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    sparse = SparseEncoder()
    return v.tolist(), [sparse.encode_query(" ".join(m.texts[b].split()[:12])) for b in picks]


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
            command, check=True, capture_output=True, text=True, preexec_fn=join
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
            [sys.executable, __file__, "--serve-probe", str(root), fh.name], limit_mb
        )


def limited_cycle(
    root: Path, args: argparse.Namespace, next_id: int, limit_mb: int
) -> dict[str, Any]:
    """The whole service's memory under the limit: a new process in a memory cgroup of
    `limit_mb` (the shard's files evicted first) opens the optimised shard as the
    service does, adds `CYCLE_POINTS` points and runs one optimiser cycle, its child
    inside the same group, with the probes beside it."""
    command = [
        sys.executable, __file__, "--cycle-probe", str(root), str(next_id),
        "--base", str(args.base), "--queries", str(args.queries),
    ]  # fmt: skip
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


def rebuilt(stats: dict[str, Any]) -> str:
    """How the child treated a shard it had never optimised (see `ChunkStore.swap`)."""
    notes = []
    if stats.get("rebuilt"):
        notes.append("rebuilt in steps")
    if stats.get("spare_from_child"):
        notes.append(f"its copy is the next spare ({stats.get('child_copy_s', 0):.1f} s)")
    return f"; {', '.join(notes)}" if notes else ""


def fmt(lat: dict[str, dict[str, float]]) -> str:
    def one(k: str, v: dict[str, float]) -> str:
        faults = v.get("major_faults_per_query")
        return f"{k} {v['p50_ms']:.1f}/{v['p99_ms']:.1f} ms" + (
            f" ({faults:.1f} disk reads/query)" if faults else ""
        )

    return ", ".join(one(k, v) for k, v in lat.items())


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
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "scale.json")
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
    ap.add_argument("--serve-probe", nargs=2, type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cycle-probe", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--evict", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_probe:
        serve_probe(*args.serve_probe, evict_first=args.evict)
        return
    if args.cycle_probe:
        root, next_id = args.cycle_probe
        m = Material(args.base, args.queries)
        cycle_probe(Path(root), int(next_id), m, evict_first=args.evict)
        return
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        for n in sizes:
            report["sizes"].append(run_size(n, m, workdir, args))
            report["sizes"].sort(key=lambda r: r["points"])
            args.out.write_text(json.dumps(report, indent=2))  # each size as soon as it is done
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
