"""`/retrieve` latency and throughput per mode, on the Django docs indexed in Qdrant Edge.

Baseline in the same run: the same queries through the retriever in-process (no HTTP), so
the ratio shows what the HTTP layer costs on this machine.

Reads beside writes (`--write-load`): a real worker on the bundled Tansu broker, in the
one-process layout `freshrag up` uses, and hybrid `/retrieve` p99 in three phases of the
same run: idle, during a bulk backfill, and during a stream of small edits (20/s). The
ratio to the idle phase is the figure: queries must not queue behind writes.

    .venv/bin/python -m bench.retrieve [--docs 640] [--requests 400] [--concurrency 4]
    .venv/bin/python -m bench.retrieve --write-load [--docs 200] [--backfill 400]

Writes bench/results/retrieve.json (or retrieve_under_writes.json with --write-load).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from dataclasses import replace
from pathlib import Path

import httpx

from api.auth import KeyStore
from bench.harness import (
    QUERIES,
    RESULTS,
    QueryLoad,
    free_port,
    index_pages,
    llama_minilm,
    loadavg,
    pct,
    sample_pages,
    scratch_dir,
    serve,
    write,
)
from freshrag.runtime import Core
from freshrag.settings import Settings
from retrieval.search import PREVIOUS_RANKING, Principal, Retriever
from retrieval.store.types import Match


def query(i: int, mode: str) -> str:
    """Distinct text per request and mode, so the query-embedding cache does not flatter the numbers."""
    return f"{QUERIES[i % len(QUERIES)]} ({mode} request {i})"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--docs", type=int, default=None, help="pages indexed (640; 200 with --write-load)"
    )
    ap.add_argument("--requests", type=int, default=400, help="requests per mode")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each remote-client load")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--write-load", action="store_true", help="idle / backfill / edits phases (see above)"
    )
    ap.add_argument("--backfill", type=int, default=400, help="pages published as a backfill")
    ap.add_argument("--edits-per-s", type=float, default=20.0)
    ap.add_argument(
        "--inline",
        action="store_true",
        help="write path in the worker thread (FRESHRAG_INGEST_PROCESS=false), for comparison",
    )
    args = ap.parse_args()
    if args.docs is None:
        args.docs = 200 if args.write_load else 640
    if args.write_load:
        name = "retrieve_under_writes_inline.json" if args.inline else "retrieve_under_writes.json"
        args.out = args.out or RESULTS / name
        return under_writes(args)
    args.out = args.out or RESULTS / "retrieve.json"

    tmp = scratch_dir("freshrag-bench-")
    settings = Settings(
        data_dir=tmp, api_keys={"bench": {"tenant": "default", "groups": ["public"]}}
    )
    core = Core.open(settings)
    _, events, _ = sample_pages(settings.sample_django_version, args.docs)
    index_pages(core, events)
    chunks = core.index.count_chunks([Match("tenant", "default")])
    # The same chunks and vectors behind a LlamaIndex retriever, in-process (its best of
    # sequential and threaded), measured before this process turns into a server.
    llama = llama_baseline(core, events, args)

    server = serve(core, settings.api_keys)
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
            # The same load from another process, as real callers are (their HTTP client
            # then takes no CPU time and no GIL from the server).
            remote = QueryLoad(server.url, "bench", args.concurrency, args.seconds, mode=mode)
            result["modes"][mode] = {
                **{f"remote_{k}": v for k, v in remote.result().items()},
                "http_p50_ms": round(pct(http_lat, 50), 2),
                "http_p99_ms": round(pct(http_lat, 99), 2),
                "http_qps": round(len(http_lat) / wall, 1),
                "inprocess_p50_ms": round(pct(inproc, 50), 2),
                "inprocess_p99_ms": round(pct(inproc, 99), 2),
                "http_vs_inprocess_p50": round(pct(http_lat, 50) / pct(inproc, 50), 2),
                "mean_ms": round(statistics.fmean(http_lat), 2),
            }
            print(mode, result["modes"][mode], flush=True)
        # What the ranking costs (30 candidates, heading and page boosts, section grouping;
        # the headings cached after their first query) against the
        # previous one (RRF k=60 over top_k chunks), in-process, same queries, alternating.
        plain = Retriever(core.index, core.dense, core.sparse, PREVIOUS_RANKING)
        now, before = [], []
        for i in range(args.requests):
            q = query(i + 200_000, "hybrid")
            vector = core.dense.encode_query(q)  # encoded once: the ranking is what differs
            for lat, r, group in ((now, retriever, "section"), (before, plain, "chunk")):
                t = time.perf_counter()
                r.retrieve(who, q, args.top_k, "hybrid", dense_vector=vector, group=group)
                lat.append((time.perf_counter() - t) * 1000)
        # The worst case of the (opt-in) heading boost: no heading of the candidates cached
        # yet (a cold process, or a corpus with more headings than the cache holds).
        boosted = Retriever(
            core.index,
            core.dense,
            core.sparse,
            replace(retriever.ranking, heading_weight=0.3, document_boost=0.1),
        )
        cold = []
        for i in range(min(args.requests, 100)):
            q = query(i + 300_000, "hybrid")
            vector = core.dense.encode_query(q)
            core.dense._headings.clear()
            t = time.perf_counter()
            boosted.retrieve(who, q, args.top_k, "hybrid", dense_vector=vector)
            cold.append((time.perf_counter() - t) * 1000)
        result["hybrid_ranking"] = {
            "p50_ms": round(pct(now, 50), 3),
            "p99_ms": round(pct(now, 99), 3),
            "previous_ranking_p50_ms": round(pct(before, 50), 3),
            "previous_ranking_p99_ms": round(pct(before, 99), 3),
            "p50_ratio": round(pct(now, 50) / pct(before, 50), 2),
            # Opt-in heading boost (FRESHRAG_HEADING_WEIGHT=0.3), no heading cached:
            "cold_headings_p50_ms": round(pct(cold, 50), 3),
            "cold_headings_p99_ms": round(pct(cold, 99), 3),
        }
        print("hybrid ranking (query vector given)", result["hybrid_ranking"], flush=True)
        result["llamaindex"] = llama
        result["hybrid_http_vs_llamaindex_best_qps"] = round(
            result["modes"]["hybrid"]["remote_qps"] / llama["best_qps"], 2
        )
        print("llama-index", llama, "ratio", result["hybrid_http_vs_llamaindex_best_qps"])
        # Baseline in the same run: the same remote load with the eager model (no traced
        # graph), which retakes the GIL at every operator beside the HTTP threads.
        traced, core.dense._traced = core.dense._traced, None
        eager = QueryLoad(server.url, "bench", args.concurrency, args.seconds, mode="hybrid")
        eager_stats = eager.result()
        core.dense._traced = traced
        result["hybrid_eager_encoder"] = {
            "traced_in_run": traced is not None,
            **{f"remote_{k}": v for k, v in eager_stats.items()},
        }
        result["hybrid_traced_vs_eager_qps"] = round(
            result["modes"]["hybrid"]["remote_qps"] / eager_stats["qps"], 2
        )
        print("hybrid, eager encoder", result["hybrid_eager_encoder"], flush=True)
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
    result["loadavg_1m"] = loadavg()[0]
    write(result, args.out)


def llama_baseline(core: Core, events: list, args: argparse.Namespace) -> dict:
    """A LlamaIndex `VectorStoreIndex` retriever over the same pages, as a LlamaIndex user
    builds it (its default `SentenceSplitter`, the same MiniLM as a plain
    sentence-transformers model on the process's default torch threads), in-process:
    sequential, then from `--concurrency` threads; its best is the baseline."""
    from concurrent.futures import ThreadPoolExecutor

    from llama_index.core import Document, VectorStoreIndex
    from sentence_transformers import SentenceTransformer

    from retrieval.encoders import resolve_model_path

    model = SentenceTransformer(resolve_model_path(core.settings.model), device="cpu")

    class Plain:  # the model as a LlamaIndex user calls it: no lock, no batcher
        @staticmethod
        def encode(texts: list[str]) -> list[list[float]]:
            return model.encode(texts, normalize_embeddings=True).tolist()

    documents = [Document(text=e.content or "", metadata={"doc_id": e.doc_id}) for e in events]
    started = time.perf_counter()
    index = VectorStoreIndex.from_documents(documents, embed_model=llama_minilm(Plain()))
    build_s = time.perf_counter() - started
    retriever = index.as_retriever(similarity_top_k=args.top_k)
    n = min(args.requests, 400)
    retriever.retrieve(query(0, "llama-warm"))
    started = time.perf_counter()
    for i in range(n):
        retriever.retrieve(query(i, "llama"))
    sequential = n / (time.perf_counter() - started)
    with ThreadPoolExecutor(args.concurrency) as pool:
        started = time.perf_counter()
        list(pool.map(lambda i: retriever.retrieve(query(i, "llama-threads")), range(n)))
        threaded = n / (time.perf_counter() - started)
    return {
        "nodes": len(index.docstore.docs),
        "build_s": round(build_s, 1),
        "sequential_qps": round(sequential, 1),
        "threaded_qps": round(threaded, 1),
        "threads": args.concurrency,
        "best_qps": round(max(sequential, threaded), 1),
    }


def under_writes(args: argparse.Namespace) -> None:
    """Hybrid p50/p99 idle, during a backfill, and during 20 edits/s, in one process."""
    from freshrag.runtime import EmbeddedBroker
    from ingest.broker import ensure_topics
    from ingest.publisher import Publisher

    tmp = scratch_dir("freshrag-bench-")
    broker = EmbeddedBroker(port=free_port(), log_path=tmp / "broker.log").start()
    settings = Settings(
        data_dir=tmp,
        api_keys={"bench": {"tenant": "default", "groups": ["public"]}},
        kafka_bootstrap_servers=broker.bootstrap,
        kafka_session_timeout_ms=6000,
        kafka_max_poll_interval_ms=6000,
        ingest_process=not args.inline,
    )
    ensure_topics(settings)
    core = Core.open(settings)
    _, base, backfill = sample_pages(settings.sample_django_version, args.docs, args.backfill)
    index_pages(core, base, desc="indexing the base")
    server = serve(core, settings.api_keys)
    worker = core.worker()
    worker_thread = threading.Thread(target=worker.run, name="worker", daemon=True)
    worker_thread.start()
    publisher = Publisher(settings.kafka_bootstrap_servers, settings.topic)
    args.mode = "hybrid"
    result: dict = {
        "benchmark": "retrieve_under_writes",
        "write_path": (
            "inline (worker thread)"
            if args.inline
            else f"child processes (nice {settings.ingest_nice}"
            + (", SCHED_IDLE)" if settings.ingest_idle else ")")
        ),
        "query_threads": settings.query_threads,
        "base_docs": len(base),
        "backfill_docs": len(backfill),
        "edits_per_s": args.edits_per_s,
        "requests_per_phase": args.requests,
        "concurrency": args.concurrency,
        "top_k": args.top_k,
        "cpus": os.cpu_count(),
        "phases": {},
    }

    def phase(name: str) -> None:
        load_before = loadavg()[0]
        lat, wall = _http_load(server.url, "hybrid", args, tag=name)
        result["phases"][name] = {
            "p50_ms": round(pct(lat, 50), 2),
            "p99_ms": round(pct(lat, 99), 2),
            "qps": round(len(lat) / wall, 1),
            "loadavg_1m": round(max(load_before, loadavg()[0]), 2),
        }
        print(name, result["phases"][name], flush=True)

    try:
        # Warm up: the worker has joined, its child process is up, the HTTP path is hot.
        warm = base[0].model_copy(
            update={"version": 2, "content": (base[0].content or "") + "\n\nWarm.\n"}
        )
        publisher.publish([warm], progress=False)
        deadline = time.monotonic() + 300
        while (st := core.index.get_document("default", warm.doc_id)) is None or st.version < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the worker indexed nothing in 5 minutes")
            time.sleep(0.2)
        _http_load(server.url, "hybrid", args, tag="warmup")
        phase("idle")
        bulk = Publisher(settings.kafka_bootstrap_servers, settings.backfill_topic)
        bulk.publish(backfill, progress=False)
        bulk.close()
        time.sleep(2)  # the worker is busy with the backfill now
        phase("backfill")
        indexed = sum(
            1
            for e in backfill
            if (st := core.index.get_document("default", e.doc_id)) and st.version >= 1
        )
        result["backfill_indexed_during_phase"] = indexed
        # Drain the backfill, then a steady stream of one-sentence edits.
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline and any(
            core.index.get_document("default", e.doc_id) is None for e in backfill[-5:]
        ):
            time.sleep(1)
        stop = threading.Event()

        sent: dict[str, int] = {}

        def edits() -> None:
            version, i = 3, 0
            while not stop.is_set():
                e = base[i % len(base)]
                edited = e.model_copy(
                    update={
                        "version": version,
                        "content": (e.content or "") + f"\n\nEdit number {version}.\n",
                    }
                )
                publisher.publish([edited], progress=False)
                sent[e.doc_id] = version
                version, i = version + 1, i + 1
                stop.wait(1 / args.edits_per_s)

        editor = threading.Thread(target=edits, daemon=True)
        editor.start()
        time.sleep(2)
        phase("edits")
        stop.set()
        editor.join()
        # What the write path kept up with while queries had the CPU first.
        behind = sum(
            1
            for doc_id, v in sent.items()
            if (st := core.index.get_document("default", doc_id)) is None or st.version < v
        )
        result["phases"]["edits"]["edits_sent"] = max(sent.values(), default=2) - 2
        result["phases"]["edits"]["pages_behind_at_end"] = behind
        idle = result["phases"]["idle"]["p99_ms"]
        result["p99_ratio_backfill_vs_idle"] = round(
            result["phases"]["backfill"]["p99_ms"] / idle, 2
        )
        result["p99_ratio_edits_vs_idle"] = round(result["phases"]["edits"]["p99_ms"] / idle, 2)
    finally:
        worker.stop()
        worker_thread.join(60)
        publisher.close()
        server.stop()
        core.index.close()
        broker.stop()
    write(result, args.out)


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
