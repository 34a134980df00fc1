"""Release replay: Django 5.1.14 → 5.2.8 `docs/topics` as real edits, FreshRAG vs LlamaIndex.

FreshRAG: the old release indexed by a real worker on the bundled Tansu broker, then
every page of the new release published as an update; we time until every changed page
is searchable at its new version, and count the chunks embedded. LlamaIndex, same run,
same pages, same MiniLM model: an `IngestionPipeline` with a docstore in UPSERTS mode
and `SentenceSplitter` at FreshRAG's chunk size (no overlap) over the raw text; we time
its update run (`pipeline.run` on the new release after a run on the old one).

    .venv/bin/python -m bench.replay [--old 5.1.14] [--new 5.2.8] [--section topics]

Writes bench/results/replay.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench.harness import (
    RESULTS,
    SAMPLES,
    WorkerThread,
    free_port,
    llama_minilm,
    loadavg,
    scratch_dir,
    write,
)
from freshrag.runtime import Core, EmbeddedBroker
from freshrag.settings import Settings
from ingest.broker import ensure_topics
from ingest.publisher import Publisher, build_events
from ingest.sample import django_docs
from retrieval.encoders import DenseEncoder


def pages(version: str, section: str) -> dict[str, str]:
    docs = django_docs(version, SAMPLES)
    return {
        p.relative_to(docs).as_posix(): p.read_text(encoding="utf-8", errors="replace")
        for p in sorted((docs / section).rglob("*.txt"))
    }


def freshrag(old: dict[str, str], new: dict[str, str], section: str, tmp: Path) -> dict:
    broker = EmbeddedBroker(port=free_port(), log_path=tmp / "tansu.log").start()
    settings = Settings(data_dir=tmp / "freshrag", kafka_bootstrap_servers=broker.bootstrap)
    try:
        ensure_topics(settings)
        core = Core.open(settings)
        indexer = core.indexer()
        indexer.apply(_events(old, 1))
        indexer.processor.close()
        worker = WorkerThread(core)
        changed = {d for d, text in new.items() if old.get(d) != text}
        publisher = Publisher(settings.kafka_bootstrap_servers, settings.topic)
        started = time.perf_counter()
        publisher.publish(_events(new, 2), progress=False)
        waiting = {f"django/{d}" for d in changed}
        while waiting:
            waiting = {
                d
                for d in waiting
                if (s := core.index.get_document("default", d)) is None or s.version < 2
            }
            time.sleep(0.01)
        searchable_s = time.perf_counter() - started
        unchanged = {f"django/{d}" for d in new if d not in changed}
        while any(
            (s := core.index.get_document("default", d)) is None or s.version < 2 for d in unchanged
        ):
            time.sleep(0.01)
        all_s = time.perf_counter() - started
        worker.stop()
        publisher.close()
        core.index.close()
    finally:
        broker.stop()
    return {
        "pages": len(new),
        "pages_changed_or_added": len(changed),
        "chunks_embedded": worker.embedded,
        "seconds_until_changes_searchable": round(searchable_s, 2),
        "seconds_until_every_page_at_new_version": round(all_s, 2),
    }


def _events(texts: dict[str, str], version: int) -> list:
    tmp = scratch_dir("replay-pages-")
    for d, text in texts.items():
        (tmp / d).parent.mkdir(parents=True, exist_ok=True)
        (tmp / d).write_text(text)
    return build_events([tmp], root=tmp, mime="text/x-rst", prefix="django/", version=version)


def llamaindex(old: dict[str, str], new: dict[str, str], chunk_size: int) -> dict:
    from llama_index.core import Document
    from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.storage.docstore import SimpleDocumentStore
    from llama_index.core.vector_stores import SimpleVectorStore

    embed = llama_minilm(DenseEncoder("all-MiniLM-L6-v2"))
    pipeline = IngestionPipeline(
        transformations=[SentenceSplitter(chunk_size=chunk_size, chunk_overlap=0), embed],
        docstore=SimpleDocumentStore(),
        vector_store=SimpleVectorStore(),
        docstore_strategy=DocstoreStrategy.UPSERTS,
    )

    def docs(texts: dict[str, str]) -> list[Any]:
        return [Document(text=t, id_=f"django/{d}") for d, t in texts.items()]

    pipeline.run(documents=docs(old))
    before = embed.calls
    started = time.perf_counter()
    pipeline.run(documents=docs(new))
    seconds = time.perf_counter() - started
    return {"chunks_embedded": embed.calls - before, "seconds_until_done": round(seconds, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--old", default="5.1.14")
    ap.add_argument("--new", default="5.2.8")
    ap.add_argument("--section", default="topics")
    ap.add_argument("--out", type=Path, default=RESULTS / "replay.json")
    args = ap.parse_args()
    old, new = pages(args.old, args.section), pages(args.new, args.section)
    tmp = scratch_dir("freshrag-bench-")
    chunk_size = Settings().chunk_size
    load_before = loadavg()
    ours = freshrag(old, new, args.section, tmp)
    print("freshrag", ours, flush=True)
    theirs = llamaindex(old, new, chunk_size)
    print("llamaindex", theirs, flush=True)
    write(
        {
            "benchmark": "replay",
            "update": f"django {args.old} -> {args.new} docs/{args.section}",
            "chunk_size": chunk_size,
            "freshrag": ours,
            "llamaindex_upserts": theirs,
            "speedup_searchable_vs_llamaindex_done": round(
                theirs["seconds_until_done"] / ours["seconds_until_changes_searchable"], 2
            ),
            "loadavg_before": load_before,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
