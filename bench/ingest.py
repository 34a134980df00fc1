"""Ingest throughput: the full pipeline against the bare embedder on the same chunks.

Pipeline = broker → worker → parse (child process) → chunk → diff → embed (child
process) → Qdrant Edge, as `freshrag up` runs it. Baseline in the same run = the same
model encoding the same chunk texts in one call in this process. Then a per-stage
profile in-process on the same pages: ms/page for parse, chunk, embed and write.

    .venv/bin/python -m bench.ingest [--docs 200]

Writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench.harness import (
    RESULTS,
    WorkerThread,
    free_port,
    loadavg,
    sample_pages,
    scratch_dir,
    write,
)
from freshrag.runtime import Core, EmbeddedBroker
from freshrag.settings import Settings
from ingest.broker import ensure_topics
from ingest.chunker import Chunker
from ingest.parser import parse
from ingest.publisher import Publisher
from retrieval.encoders import DenseEncoder, SparseEncoder
from retrieval.store.types import ChunkPoint, Match, chunk_point_id


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=200, help="Django doc pages to ingest")
    ap.add_argument("--out", type=Path, default=RESULTS / "ingest.json")
    args = ap.parse_args()

    tmp = scratch_dir("freshrag-bench-")
    broker = EmbeddedBroker(port=free_port(), log_path=tmp / "tansu.log").start()
    settings = Settings(data_dir=tmp, kafka_bootstrap_servers=broker.bootstrap, poll_timeout_ms=200)
    try:
        ensure_topics(settings)
        _, events, _ = sample_pages(settings.sample_django_version, args.docs)
        core = Core.open(settings)
        worker = WorkerThread(core)
        load_before = loadavg()
        publisher = Publisher(settings.kafka_bootstrap_servers, settings.backfill_topic)
        started = time.perf_counter()
        publisher.publish(events, progress=False)
        pending = {e.doc_id for e in events}
        while pending:
            pending = {d for d in pending if core.index.get_document("default", d) is None}
            time.sleep(0.02)
        pipeline_s = time.perf_counter() - started
        worker.stop()
        publisher.close()
        chunks = core.index.count_chunks([Match("tenant", "default")])

        texts = _all_texts(core)
        started = time.perf_counter()
        core.dense.encode(texts)
        embed_s = time.perf_counter() - started
        core.index.close()
        profile = stage_profile(events, settings, core.dense, tmp)
    finally:
        broker.stop()

    result = {
        "benchmark": "ingest",
        "docs": len(events),
        "chunks": chunks,
        "chunks_embedded": worker.embedded,
        "pipeline_seconds": round(pipeline_s, 3),
        "pipeline_chunks_per_s": round(chunks / pipeline_s, 1),
        "embedder_seconds": round(embed_s, 3),
        "embedder_chunks_per_s": round(len(texts) / embed_s, 1),
        "pipeline_vs_embedder": round((chunks / pipeline_s) / (len(texts) / embed_s), 3),
        "stage_ms_per_page": profile,
        "loadavg_before": load_before,
    }
    write(result, args.out)


def stage_profile(events: list, settings: Settings, dense: DenseEncoder, tmp: Path) -> dict:
    """Each stage alone, in this process, on the same pages: median and mean ms/page."""
    from retrieval.store.edge.adapter import EdgeIndex

    chunker = Chunker(
        settings.chunk_size,
        settings.chunk_overlap,
        headers=settings.chunk_headers,
        model=settings.model,
    )
    sparse = SparseEncoder()
    index = EdgeIndex(tmp / "profile", "chunks", "documents")
    index.ensure_schema(dense.dim)
    times: dict[str, list[float]] = {"parse": [], "chunk": [], "embed": [], "write": []}
    for e in events:
        t0 = time.perf_counter()
        elements = parse(e.content, e.mime)
        t1 = time.perf_counter()
        chunks = chunker.chunk(elements)
        t2 = time.perf_counter()
        vectors = dense.encode([c.text for c in chunks])
        t3 = time.perf_counter()
        points = [
            ChunkPoint(chunk_point_id("default", e.doc_id, c.hash), v, sv, {"text": c.text})
            for c, v, sv in zip(
                chunks, vectors, sparse.encode_documents([c.text for c in chunks]), strict=True
            )
        ]
        index.upsert_chunks(points)
        t4 = time.perf_counter()
        for name, a, b in (
            ("parse", t0, t1),
            ("chunk", t1, t2),
            ("embed", t2, t3),
            ("write", t3, t4),
        ):
            times[name].append((b - a) * 1000)
    index.close()
    return {
        name: {"median": round(statistics.median(v), 2), "mean": round(statistics.fmean(v), 2)}
        for name, v in times.items()
    }


def _all_texts(core: Core) -> list[str]:
    import qdrant_edge as qe

    texts, offset = [], None
    while True:
        page, offset = core.index.chunks.scroll(
            qe.ScrollRequest(offset=offset, limit=512, with_payload=["text"])
        )
        texts += [r.payload["text"] for r in page]
        if offset is None:
            return texts


if __name__ == "__main__":
    main()
