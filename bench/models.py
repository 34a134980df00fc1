"""Embedding models side by side on the dev set: dense quality and encoding speed.

Same chunks (the service's parser and chunker, with headers), same questions (the dev
set's answerable ones), exact dense search (numpy, no index) with each model, scored like
bench.quality at page and passage level; speed = chunks encoded per second, each model
on the same texts in the same run. The corpus is the gold pages plus `--docs` others (all
638 pages take MiniLM ~5 min but all-mpnet-base-v2 ~50 min on 2 cores).

    .venv/bin/python -m bench.models --model PATH_OR_NAME [--model ...] [--docs N]

Install all-mpnet-base-v2 first with `freshrag model install all-mpnet-base-v2` (it
prints the path to pass). Writes bench/results/models.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bench.harness import RESULTS, SAMPLES, write
from bench.quality import CANDIDATES, gold_docs, score
from evals.dataset import default_path, load
from freshrag.settings import Settings
from ingest.chunker import Chunker
from ingest.parser import parse
from ingest.sample import django_docs, doc_files
from retrieval.encoders import DenseEncoder


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", action="append", required=True, help="name or path (repeat)")
    ap.add_argument("--docs", type=int, default=0, help="pages besides the gold ones")
    ap.add_argument("--out", type=Path, default=RESULTS / "models.json")
    args = ap.parse_args()

    settings = Settings()
    docs = django_docs(settings.sample_django_version, SAMPLES)
    items = load(default_path(settings.sample_django_version))
    wanted = {d.removeprefix("django/") for i in items for d in gold_docs(i)}
    every = doc_files(docs)
    gold = [p for p in every if p.relative_to(docs).as_posix() in wanted]
    files = gold + [p for p in every if p not in gold][: args.docs]
    chunker = Chunker(settings.chunk_size, settings.chunk_overlap)
    chunks = [
        (f"django/{p.relative_to(docs).as_posix()}", c)
        for p in files
        for c in chunker.chunk(parse(p.read_text(encoding="utf-8"), "text/x-rst"))
    ]
    texts = [c.indexed_text for _, c in chunks]
    result: dict = {
        "benchmark": "models",
        "questions": len(items),
        "pages": len(files),
        "chunks": len(chunks),
        "models": {},
    }
    for name in args.model:
        encoder = DenseEncoder(name)
        encoder.encode(texts[:32])  # warm
        started = time.perf_counter()
        matrix = np.asarray(encoder.encode(texts, show_progress=sys.stderr.isatty()))
        seconds = time.perf_counter() - started
        queries = np.asarray(encoder.encode([i.question for i in items]))
        ranked = {}
        for item, q in zip(items, queries, strict=True):
            top = np.argsort(-(matrix @ q))[:CANDIDATES]
            ranked[item.id] = [(chunks[t][0], chunks[t][1].text) for t in top]
        row = {
            **score(items, ranked),
            "dim": encoder.dim,
            "chunks_per_s": round(len(texts) / seconds, 1),
            "encode_seconds": round(seconds, 1),
        }
        result["models"][Path(name).name or name] = row
        print(Path(name).name or name, row, flush=True)
    write(result, args.out)


if __name__ == "__main__":
    main()
