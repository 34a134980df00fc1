"""Retrieval quality on the honest Django dev set: FreshRAG's modes against llama-index.

Same corpus (the Django docs of the sample release: every page, or `--docs N` pages plus
every gold page), same questions (the dev set's answerable ones), same MiniLM model,
scored the same way, in one run:

- document level: the top 30 chunks folded to distinct pages in rank order; nDCG@10,
  MRR@10 and hit@10 of the gold pages (ranx for nDCG and MRR);
- passage level: a chunk is right when its words contain the opening words of a gold
  passage (lower-cased words only, so raw reST markup and FreshRAG's parsed text compare
  alike); MRR@10 and hit@10 over the first 10 chunks.

Pipelines: FreshRAG hybrid, dense and sparse as the service runs them; llama-index
`SentenceSplitter()` with its defaults and `SentenceSplitter(chunk_size=192,
chunk_overlap=0)` over the raw reST, each in a `VectorStoreIndex` with its retriever.

    .venv/bin/python bench/quality.py [--docs N] [--dataset FILE]

Writes bench/results/quality.json.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not bench/: its ingest.py would shadow the ingest package

from tqdm import tqdm  # noqa: E402

from api.runtime import Core  # noqa: E402
from bench.harness import RESULTS, llama_minilm, write  # noqa: E402
from evals.dataset import EvalItem, default_path, load  # noqa: E402
from evals.metrics import ir_scores  # noqa: E402
from ingest.publisher import build_events  # noqa: E402
from ingest.sample import django_docs, doc_files  # noqa: E402
from retrieval.search import Principal, Retriever  # noqa: E402
from retrieval.settings import Settings  # noqa: E402

CANDIDATES = 30  # chunks per question before folding to pages
PROBE_WORDS = 8


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def probe(passage: str) -> str:
    """The opening words of a gold passage's body (its first line is usually a heading)."""
    lines = [ln for ln in passage.splitlines() if ln.strip()]
    body = " ".join(lines[1:]) if len(lines) > 1 else passage
    return " ".join(words(body).split()[:PROBE_WORDS])


def gold_docs(item: EvalItem) -> list[str]:
    return item.gold_doc_ids or list(dict.fromkeys(c.split("#")[0] for c in item.gold_contexts))


def first_hit(flags: list[bool], k: int = 10) -> int | None:
    return next((n for n, ok in enumerate(flags[:k], 1) if ok), None)


def score(items: list[EvalItem], ranked: dict[str, list[tuple[str, str]]]) -> dict[str, float]:
    """`ranked[item.id]` = (doc_id, text) of the retrieved chunks, best first."""
    gold = {i.id: gold_docs(i) for i in items}
    pages = {q: list(dict.fromkeys(d for d, _ in hits))[:10] for q, hits in ranked.items()}
    ir = ir_scores(gold, pages)
    doc_hit = [any(d in gold[q] for d in pages[q]) for q in gold]
    passage_ranks = []
    for i in items:
        probes = [p for p in map(probe, i.gold_passages) if p]
        flags = [any(p in words(text) for p in probes) for _, text in ranked[i.id]]
        passage_ranks.append(first_hit(flags) if probes else None)
    with_passages = [i for i in items if i.gold_passages]
    n = len(items)
    return {
        "doc_ndcg@10": round(sum(s["ndcg@10"] for s in ir.values()) / n, 4),
        "doc_mrr@10": round(sum(s["mrr@10"] for s in ir.values()) / n, 4),
        "doc_hit@10": round(sum(doc_hit) / n, 4),
        "passage_mrr@10": round(
            sum(1 / r for r in passage_ranks if r) / max(1, len(with_passages)), 4
        ),
        "passage_hit@10": round(sum(1 for r in passage_ranks if r) / max(1, len(with_passages)), 4),
    }


def freshrag(files: list[Path], docs: Path, items: list[EvalItem]) -> dict[str, dict]:
    settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="freshrag-quality-")))
    core = Core.open(settings)
    events = build_events(files, root=docs, mime="text/x-rst", prefix="django/", version=1)
    indexer = core.indexer()
    started = time.perf_counter()
    for i in tqdm(range(0, len(events), 16), desc="FreshRAG: indexing", unit="batch"):
        indexer.apply(events[i : i + 16])
    indexer.processor.close()
    seconds = time.perf_counter() - started
    retriever = Retriever(core.index, core.dense, core.sparse)
    who = Principal("bench", "default", ("public",))
    out = {}
    for mode in ("hybrid", "dense", "sparse"):
        ranked = {
            i.id: [
                (h.payload["doc_id"], h.payload["text"])
                for h in retriever.retrieve(who, i.question, CANDIDATES, mode)
            ]
            for i in items
        }
        out[f"freshrag_{mode}"] = {
            **score(items, ranked),
            "chunks": core.index.count_chunks([]),
            "index_seconds": round(seconds, 1),
        }
    core.index.close()
    return out


def llamaindex(
    files: list[Path],
    docs: Path,
    items: list[EvalItem],
    encoder,
    **splitter,  # noqa: ANN001, ANN003
) -> dict:
    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter

    documents = [
        Document(
            text=p.read_text(encoding="utf-8", errors="replace"),
            id_=f"django/{p.relative_to(docs).as_posix()}",
        )
        for p in files
    ]
    started = time.perf_counter()
    nodes = SentenceSplitter(**splitter).get_nodes_from_documents(documents)
    embed = llama_minilm(encoder)
    index = VectorStoreIndex(nodes, embed_model=embed, show_progress=sys.stderr.isatty())
    seconds = time.perf_counter() - started
    retriever = index.as_retriever(similarity_top_k=CANDIDATES)
    ranked = {
        i.id: [(n.node.ref_doc_id, n.node.get_content()) for n in retriever.retrieve(i.question)]
        for i in items
    }
    return {**score(items, ranked), "chunks": len(nodes), "index_seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--docs", type=int, default=None, help="pages besides the gold ones (all)")
    ap.add_argument("--dataset", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    args = ap.parse_args()

    version = Settings().sample_django_version
    docs = django_docs(version, ROOT / "data" / "samples")
    items = [i for i in load(args.dataset or default_path(version)) if i.answerable]
    every = doc_files(docs)
    if args.docs is None:
        files = every
    else:
        wanted = {d.removeprefix("django/") for i in items for d in gold_docs(i)}
        gold = [p for p in every if p.relative_to(docs).as_posix() in wanted]
        files = gold + [p for p in every if p not in gold][: args.docs]
    result: dict = {
        "benchmark": "quality",
        "dataset": str((args.dataset or default_path(version)).relative_to(ROOT)),
        "questions": len(items),
        "pages": len(files),
        "candidates": CANDIDATES,
        "pipelines": {},
    }
    result["pipelines"].update(freshrag(files, docs, items))
    from retrieval.encoders import DenseEncoder

    encoder = DenseEncoder(Settings().model)
    result["pipelines"]["llamaindex_defaults"] = llamaindex(files, docs, items, encoder)
    result["pipelines"]["llamaindex_192_0"] = llamaindex(
        files, docs, items, encoder, chunk_size=192, chunk_overlap=0
    )
    cols = ["doc_ndcg@10", "doc_mrr@10", "doc_hit@10", "passage_mrr@10", "passage_hit@10"]
    print(f"{'pipeline':24}" + "".join(f"{c:>16}" for c in cols) + f"{'chunks':>9}")
    for name, row in result["pipelines"].items():
        print(f"{name:24}" + "".join(f"{row[c]:>16.3f}" for c in cols) + f"{row['chunks']:>9}")
    write(result, args.out)


if __name__ == "__main__":
    main()
