"""Ingest throughput: the full pipeline (broker → parse → chunk → embed → Qdrant Edge) against
the bare embedder on the same chunks, in the same run; prints both and their ratio.

    .venv/bin/python bench/ingest.py [--docs 200]

Writes bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: its ingest.py would shadow the ingest package

from api.runtime import Core, EmbeddedBroker  # noqa: E402
from ingest.consumer import ensure_topics  # noqa: E402
from ingest.publisher import Publisher, build_events  # noqa: E402
from ingest.sample import django_docs, doc_files  # noqa: E402
from retrieval.index import Match  # noqa: E402
from retrieval.settings import Settings  # noqa: E402
from tests.conftest import free_port  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=200, help="Django doc pages to ingest")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="freshrag-bench-"))
    broker = EmbeddedBroker(port=free_port(), log_path=tmp / "tansu.log").start()
    settings = Settings(data_dir=tmp, kafka_bootstrap_servers=broker.bootstrap, poll_timeout_ms=200)
    try:
        ensure_topics(settings)
        docs = django_docs(settings.sample_django_version, ROOT / "data" / "samples")
        files = doc_files(docs, args.docs)
        events = build_events(files, root=docs, mime="text/x-rst", prefix="django/", version=1)
        core = Core.open(settings)
        core.dense.encode(["warm up"])
        worker = core.worker()
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        while not worker.consumer.assignment():  # exclude the group join from the timing
            time.sleep(0.05)
        publisher = Publisher(settings.kafka_bootstrap_servers, settings.topic)
        embedded_before = core.dense.texts_encoded
        started = time.perf_counter()
        publisher.publish(events, progress=False)
        pending = {e.doc_id for e in events}
        while pending:
            pending = {d for d in pending if core.index.get_document("default", d) is None}
            time.sleep(0.02)
        pipeline_s = time.perf_counter() - started
        worker.stop()
        thread.join(30)
        publisher.close()
        chunks = core.index.count_chunks([Match("tenant", "default")])
        embedded = core.dense.texts_encoded - embedded_before

        texts = _all_texts(core)
        started = time.perf_counter()
        core.dense.encode(texts)
        embed_s = time.perf_counter() - started
        core.index.close()
    finally:
        broker.stop()

    result = {
        "benchmark": "ingest",
        "docs": len(events),
        "chunks": chunks,
        "chunks_embedded": embedded,
        "pipeline_seconds": round(pipeline_s, 3),
        "pipeline_chunks_per_s": round(chunks / pipeline_s, 1),
        "embedder_seconds": round(embed_s, 3),
        "embedder_chunks_per_s": round(len(texts) / embed_s, 1),
        "pipeline_vs_embedder": round((chunks / pipeline_s) / (len(texts) / embed_s), 3),
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


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


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
