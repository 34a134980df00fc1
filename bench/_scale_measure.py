"""bench.scale's measurements on an open index: latency passes, recall against exact
search, and optimiser cycles with a query and a write thread timed beside them."""

from __future__ import annotations

import resource
import threading
import time
from typing import Any

import numpy as np
import qdrant_edge as qe

from bench._scale_material import Material
from bench.harness import loadavg, pct
from freshrag.settings import Settings
from retrieval.store.edge.adapter import EdgeIndex
from retrieval.store.edge.filters import to_edge_filter
from retrieval.store.edge.tuning import EdgeTuning
from retrieval.store.schema import DENSE
from retrieval.store.types import Condition, Match, MatchAny, SparseVec

CYCLE_POINTS = 20_000  # new points before each steady-state cycle (at most 10 %)
STALL_S = 0.25  # probe waits longer than this are listed with their time
FILTER: list[Condition] = [Match("tenant", "t0"), MatchAny("acl", ("public",))]
MODES = ("hybrid", "dense", "sparse")


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
            "p50_ms": pct(times, 50, "linear"),
            "p99_ms": pct(times, 99, "linear"),
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
            "query_p50_ms": pct(self.query_ms, 50, "linear"),
            "query_p99_ms": pct(self.query_ms, 99, "linear"),
            "query_max_ms": max(self.query_ms, default=0.0),
            "writes": len(self.write_ms),
            "write_p50_ms": pct(self.write_ms, 50, "linear"),
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
