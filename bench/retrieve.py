"""`/retrieve` latency and throughput per mode, on the Django docs indexed in Qdrant Edge.

Baseline in the same run: the same queries through the retriever in-process (no HTTP), so
the ratio shows what the HTTP layer costs on this machine.

    .venv/bin/python bench/retrieve.py [--docs 640] [--requests 400] [--concurrency 4]

Writes bench/results/retrieve.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: its ingest.py would shadow the ingest package

from api.app import create_app  # noqa: E402
from api.auth import KeyStore  # noqa: E402
from api.runtime import Core, ServerThread  # noqa: E402
from ingest.publisher import build_events  # noqa: E402
from ingest.sample import django_docs, doc_files  # noqa: E402
from retrieval.index import Match  # noqa: E402
from retrieval.search import Principal  # noqa: E402
from retrieval.settings import Settings  # noqa: E402
from tests.conftest import free_port  # noqa: E402

QUERIES = [
    "How do I deploy Django with Gunicorn?",
    "database transactions atomic",
    "How to write a custom template filter",
    "configure static files in production",
    "What is a QuerySet and when is it evaluated?",
    "form validation clean method",
    "timezone aware datetimes",
    "CSRF protection for AJAX requests",
    "migrations squash",
    "signals post_save receiver",
]


def query(i: int, mode: str) -> str:
    """Distinct text per request and mode, so the query-embedding cache does not flatter the numbers."""
    return f"{QUERIES[i % len(QUERIES)]} ({mode} request {i})"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=640)
    ap.add_argument("--requests", type=int, default=400, help="requests per mode")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "retrieve.json")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="freshrag-bench-"))
    settings = Settings(
        data_dir=tmp, api_keys={"bench": {"tenant": "default", "groups": ["public"]}}
    )
    core = Core.open(settings)
    docs = django_docs(settings.sample_django_version, ROOT / "data" / "samples")
    events = build_events(
        doc_files(docs, args.docs), root=docs, mime="text/x-rst", prefix="django/", version=1
    )
    indexer = core.indexer()
    for i in tqdm(range(0, len(events), 32), desc="indexing", unit="batch"):
        indexer.apply(events[i : i + 32])
    chunks = core.index.count_chunks([Match("tenant", "default")])

    server = ServerThread(
        create_app(core.services(KeyStore(settings.api_keys))), "127.0.0.1", free_port()
    ).start()
    who = Principal("bench", "default", ("public",))
    retriever = core.services(KeyStore(settings.api_keys)).retriever
    result = {
        "benchmark": "retrieve",
        "docs": len(events),
        "chunks": chunks,
        "top_k": args.top_k,
        "requests_per_mode": args.requests,
        "concurrency": args.concurrency,
        "modes": {},
    }
    try:
        for mode in ("dense", "sparse", "hybrid"):
            inproc = []
            for i in range(args.requests):
                t = time.perf_counter()
                retriever.retrieve(who, query(i + 100_000, mode), args.top_k, mode)
                inproc.append((time.perf_counter() - t) * 1000)
            http_lat, wall = _http_load(server.url, mode, args)
            result["modes"][mode] = {
                "http_p50_ms": round(pct(http_lat, 50), 2),
                "http_p99_ms": round(pct(http_lat, 99), 2),
                "http_qps": round(len(http_lat) / wall, 1),
                "inprocess_p50_ms": round(pct(inproc, 50), 2),
                "inprocess_p99_ms": round(pct(inproc, 99), 2),
                "http_vs_inprocess_p50": round(pct(http_lat, 50) / pct(inproc, 50), 2),
                "mean_ms": round(statistics.fmean(http_lat), 2),
            }
            print(mode, result["modes"][mode], flush=True)
        # Baseline in the same run: one query per model call (no cross-request batching).
        core.dense._queries.max_batch = 1
        http_lat, wall = _http_load(server.url, "dense", args, tag="unbatched")
        batched = result["modes"]["dense"]
        result["dense_unbatched"] = {
            "http_p50_ms": round(pct(http_lat, 50), 2),
            "http_p99_ms": round(pct(http_lat, 99), 2),
            "http_qps": round(len(http_lat) / wall, 1),
        }
        result["dense_batching_qps_gain"] = round(
            batched["http_qps"] / result["dense_unbatched"]["http_qps"], 2
        )
        print(
            "dense unbatched",
            result["dense_unbatched"],
            "gain",
            result["dense_batching_qps_gain"],
            flush=True,
        )
    finally:
        server.stop()
        core.index.close()
    result["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def _http_load(
    url: str, mode: str, args: argparse.Namespace, tag: str = ""
) -> tuple[list[float], float]:
    latencies: list[float] = []
    lock = threading.Lock()
    per_thread = args.requests // args.concurrency

    def client(n: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": "Bearer bench"}, timeout=30) as c:
            for i in range(per_thread):
                body = {
                    "query": query(n * 1_000_000 + i, mode + tag),
                    "top_k": args.top_k,
                    "mode": mode,
                }
                t = time.perf_counter()
                r = c.post("/retrieve", json=body)
                r.raise_for_status()
                with lock:
                    latencies.append((time.perf_counter() - t) * 1000)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, time.perf_counter() - started


if __name__ == "__main__":
    main()
