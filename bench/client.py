"""What the Python client costs over raw httpx on `/retrieve` (issue 26: ≤ 1 ms at p50).

The service as bench.retrieve serves it (Django pages in Qdrant Edge, the API in this
process); the callers in another process, as real callers are, so the client's own CPU
and GIL are not the server's. Baseline in the same run, same server, same queries:

- sync: one `httpx.Client` against one `freshrag_client.Client`, each reusing its
  connection, sequential, alternating per query (raw then client, then client then raw:
  drift and order cancel out);
- async: the same with `httpx.AsyncClient` against `freshrag_client.AsyncClient` on one
  event loop.

Raw httpx parses the JSON, as any caller does; the client also validates it into typed
hits and goes through its retry policy: that is the overhead. The queries cycle through
the harness's Django questions, each asked once before the timing, so every timed request
finds its query vector cached: the server's work is the same for both callers and small,
which keeps its noise out of a sub-millisecond difference. The overhead is the p50 of the
client minus the p50 of raw httpx (the target's figure), beside the median of the
per-query differences (the paired estimate).

    .venv/bin/python -m bench.client [--docs 100] [--requests 1000]

Writes bench/results/client.json.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.harness import (
    QUERIES,
    RESULTS,
    index_pages,
    loadavg,
    pct,
    sample_pages,
    scratch_dir,
    serve,
    write,
)

KEY = "bench"
KEYS = {KEY: {"tenant": "default", "groups": ["public"]}}
TARGET_P50_OVERHEAD_MS = 1.0
WARMUP_PAIRS = 2 * len(QUERIES)  # connections open, every query's vector cached
Timings = tuple[list[float], list[float]]  # (raw httpx ms, client ms), one pair per query


def _order(i: int) -> tuple[int, int]:
    """Which caller goes first for query `i`: raw (0) on even queries, the client on odd."""
    return (0, 1) if i % 2 == 0 else (1, 0)


def sync_pairs(url: str, key: str, n: int, top_k: int, mode: str) -> Timings:
    """`n` queries, each through one `httpx.Client` and one `freshrag_client.Client`."""
    import httpx

    from freshrag_client import Client

    body = {"top_k": top_k, "mode": mode}
    with (
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as raw,
        Client(url, key, timeout=60) as client,
    ):

        def via_raw(q: str) -> Any:
            r = raw.post("/retrieve", json={"query": q, **body})
            r.raise_for_status()
            return r.json()

        def via_client(q: str) -> Any:
            return client.retrieve(q, top_k=top_k, mode=mode)

        calls: tuple[Callable[[str], Any], ...] = (via_raw, via_client)
        out: Timings = ([], [])
        for i in range(WARMUP_PAIRS + n):
            q = QUERIES[i % len(QUERIES)]
            for side in _order(i):
                t = time.perf_counter()
                calls[side](q)
                if i >= WARMUP_PAIRS:
                    out[side].append((time.perf_counter() - t) * 1000)
    return out


async def async_pairs(url: str, key: str, n: int, top_k: int, mode: str) -> Timings:
    """The same with `httpx.AsyncClient` and `freshrag_client.AsyncClient`, one loop."""
    import httpx

    from freshrag_client import AsyncClient

    body = {"top_k": top_k, "mode": mode}
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as raw,
        AsyncClient(url, key, timeout=60) as client,
    ):

        async def via_raw(q: str) -> Any:
            r = await raw.post("/retrieve", json={"query": q, **body})
            r.raise_for_status()
            return r.json()

        async def via_client(q: str) -> Any:
            return await client.retrieve(q, top_k=top_k, mode=mode)

        calls: tuple[Callable[[str], Awaitable[Any]], ...] = (via_raw, via_client)
        out: Timings = ([], [])
        for i in range(WARMUP_PAIRS + n):
            q = QUERIES[i % len(QUERIES)]
            for side in _order(i):
                t = time.perf_counter()
                await calls[side](q)
                if i >= WARMUP_PAIRS:
                    out[side].append((time.perf_counter() - t) * 1000)
    return out


def _callers(url: str, key: str, n: int, top_k: int, mode: str, q) -> None:  # noqa: ANN001
    """In the callers' process: sync pairs, then async pairs."""
    q.put(
        (sync_pairs(url, key, n, top_k, mode), asyncio.run(async_pairs(url, key, n, top_k, mode)))
    )


def measure(url: str, n: int, top_k: int, mode: str) -> tuple[Timings, Timings]:
    """Both comparisons from a process of their own (spawned: no state of this one)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_callers, args=(url, KEY, n, top_k, mode, q), daemon=True)
    proc.start()
    try:
        while True:
            try:
                return q.get(timeout=5)
            except queue.Empty:
                if not proc.is_alive():
                    raise RuntimeError(f"the callers' process exited ({proc.exitcode})") from None
    finally:
        proc.join()


def latency(ms: list[float]) -> dict:
    return {
        "p50_ms": round(pct(ms, 50), 3),
        "p99_ms": round(pct(ms, 99), 3),
        "mean_ms": round(statistics.fmean(ms), 3),
    }


def overhead(raw: list[float], client: list[float]) -> dict:
    """The client's cost over raw httpx, and whether it meets the target."""
    p50 = pct(client, 50) - pct(raw, 50)
    return {
        "p50_ms": round(p50, 3),
        "p99_ms": round(pct(client, 99) - pct(raw, 99), 3),
        "paired_median_ms": round(
            statistics.median(c - r for r, c in zip(raw, client, strict=True)), 3
        ),
        "meets_target": p50 <= TARGET_P50_OVERHEAD_MS,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=100, help="pages indexed")
    ap.add_argument("--requests", type=int, default=1000, help="timed requests per caller")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--mode", default="hybrid", choices=["hybrid", "dense", "sparse"])
    ap.add_argument("--out", type=Path, default=RESULTS / "client.json")
    args = ap.parse_args()

    from freshrag.runtime import Core
    from freshrag.settings import Settings
    from retrieval.store.types import Match

    settings = Settings(data_dir=scratch_dir("freshrag-bench-"), api_keys=KEYS)
    core = Core.open(settings)
    _, events, _ = sample_pages(settings.sample_django_version, args.docs)
    index_pages(core, events)
    chunks = core.index.count_chunks([Match("tenant", "default")])
    server = serve(core, KEYS)
    try:
        load_before = loadavg()[0]
        (raw, client), (araw, aclient) = measure(server.url, args.requests, args.top_k, args.mode)
        load_after = loadavg()[0]
    finally:
        server.stop()
        core.index.close()
    result = {
        "benchmark": "client",
        "docs": len(events),
        "chunks": chunks,
        "mode": args.mode,
        "top_k": args.top_k,
        "requests_per_caller": args.requests,
        "warmup_pairs": WARMUP_PAIRS,
        "target_p50_overhead_ms": TARGET_P50_OVERHEAD_MS,
        "callers": {
            "httpx.Client": latency(raw),
            "freshrag_client.Client": latency(client),
            "httpx.AsyncClient": latency(araw),
            "freshrag_client.AsyncClient": latency(aclient),
        },
        "overhead": {"sync": overhead(raw, client), "async": overhead(araw, aclient)},
        "loadavg_1m": round(max(load_before, load_after), 2),
    }
    result["meets_target"] = all(o["meets_target"] for o in result["overhead"].values())
    write(result, args.out)


if __name__ == "__main__":
    main()
