"""Retrieval quality on the honest Django dev set: FreshRAG's modes against llama-index.

Same corpus (the Django docs of the sample release: every page, or `--docs N` pages plus
every gold page), same questions (the dev set's answerable ones), same MiniLM model,
scored the same way, in one run:

- document level: the top 30 hits folded to distinct pages in rank order; nDCG@10,
  MRR@10 and hit@10 of the gold pages (ranx for nDCG and MRR);
- passage level: a hit is right when its words contain the opening words of a gold
  passage (lower-cased words only, so raw reST markup and FreshRAG's parsed text compare
  alike); MRR@10 and hit@10 over the first 10 hits (a FreshRAG hit is a section's matched
  chunks, as `/retrieve` returns it by default; a llama-index hit is a chunk).

Pipelines: FreshRAG hybrid, dense and sparse as the service runs them (its settings'
defaults); llama-index `SentenceSplitter()` with its defaults and
`SentenceSplitter(chunk_size=192, chunk_overlap=0)` over the raw reST, each in a
`VectorStoreIndex` with its retriever. The ablation indexes the pages a second time
without chunk headers and scores each ranking step on both indexes.

    .venv/bin/python -m bench.quality [--docs N] [--dataset FILE] [--no-ablation] [--baseline REV]

Writes bench/results/quality.json.

`--stages` measures the optional ranking stages instead (issue 28; bench/_stages.py): one
index, each stage alone on the dev set and the held-out FAQ, with its cost per query;
`--reranker cross-encoder:<folder>` (or `llm`, on FRESHRAG_LLM_CHAIN) adds the reranker
at 10, 20 and 30 candidates. Writes bench/results/quality_stages.json.

    .venv/bin/python -m bench.quality --stages [--reranker SPEC] [--docs N] [--questions N]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from tqdm import tqdm

from bench.harness import (
    RESULTS,
    ROOT,
    SAMPLES,
    child_env,
    django_events,
    llama_minilm,
    scratch_dir,
    write,
)
from evals.dataset import EvalItem, default_path, load
from evals.metrics import ir_scores
from freshrag.runtime import Core
from freshrag.settings import Settings
from ingest.sample import django_docs, doc_files
from retrieval.search import (
    DEFAULT_RANKING,
    PREVIOUS_RANKING,
    Grouping,
    Principal,
    Ranking,
    Retriever,
)

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


# Ranking ablation on one index: each row adds one step to the one before.
_NOW = DEFAULT_RANKING
# The heading boost is off by default (FRESHRAG_HEADING_WEIGHT); its row shows it on.
HEADING_ON = replace(_NOW, heading_weight=0.3, document_boost=0.1)
ABLATION: list[tuple[str, Ranking, Grouping]] = [
    ("RRF k=60, chunks (before)", PREVIOUS_RANKING, "chunk"),
    (
        f"+ weighted RRF k={_NOW.fusion.k}, dense {_NOW.fusion.dense_weight:g}",
        replace(_NOW, document_boost=0.0),
        "chunk",
    ),
    (f"+ document boost {_NOW.document_boost:g}", _NOW, "chunk"),
    ("+ one hit per section (default)", _NOW, "section"),
    (
        f"opt-in: heading {HEADING_ON.heading_weight:g}, boost {HEADING_ON.document_boost:g}",
        HEADING_ON,
        "section",
    ),
]


def freshrag_index(files: list[Path], docs: Path, headers: bool) -> tuple[Core, float]:
    """The pages indexed as the service indexes them; `headers`: FRESHRAG_CHUNK_HEADERS."""
    settings = Settings(data_dir=scratch_dir("freshrag-quality-"), chunk_headers=headers)
    core = Core.open(settings)
    events = django_events(docs, files)
    indexer = core.indexer()
    started = time.perf_counter()
    desc = f"FreshRAG ({'headers' if headers else 'no headers'}): indexing"
    for i in tqdm(range(0, len(events), 16), desc=desc, unit="batch"):
        indexer.apply(events[i : i + 16])
    indexer.processor.close()
    return core, time.perf_counter() - started


def freshrag_run(
    retriever: Retriever, items: list[EvalItem], mode: str, group: Grouping = "section"
) -> dict[str, float]:
    who = Principal("bench", "default", ("public",))
    ranked = {
        i.id: [
            (h.payload["doc_id"], h.payload["text"])
            for h in retriever.retrieve(who, i.question, CANDIDATES, mode, group=group)
        ]
        for i in items
    }
    return score(items, ranked)


def freshrag(
    files: list[Path], docs: Path, items: list[EvalItem], ablation: bool
) -> tuple[dict[str, dict], list[dict]]:
    """The service's three modes at its defaults, and the ablation rows (hybrid)."""
    out: dict[str, dict] = {}
    rows: list[dict] = []
    for headers in (True, False) if ablation else (True,):
        core, seconds = freshrag_index(files, docs, headers)
        extra = {"chunks": core.index.count_chunks([]), "index_seconds": round(seconds, 1)}
        if headers:
            for mode in ("hybrid", "dense", "sparse"):
                out[f"freshrag_{mode}"] = {**freshrag_run(core.retriever(), items, mode), **extra}
        for name, ranking, group in ABLATION if ablation else ():
            retriever = Retriever(core.index, core.dense, core.sparse, ranking)
            for mode in ("hybrid", "dense", "sparse"):
                rows.append(
                    {
                        "headers": headers,
                        "ranking": name,
                        "mode": mode,
                        **freshrag_run(retriever, items, mode, group),
                    }
                )
        core.index.close()
    return out, rows


# Run inside a checkout of an older commit (its own code first on PYTHONPATH): index the
# pages as that version did and dump each question's ranked (doc_id, text) per mode as JSON.
_BASELINE = """
import json, shutil, sys, tempfile
from pathlib import Path
from freshrag.runtime import Core
from ingest.publisher import build_events
from retrieval.search import Principal, Retriever
from freshrag.settings import Settings
files, docs, questions, out, k = json.loads(sys.argv[1])
core = Core.open(Settings(data_dir=Path(tempfile.mkdtemp(prefix="freshrag-baseline-"))))
events = build_events([Path(f) for f in files], root=Path(docs), mime="text/x-rst",
                      prefix="django/", version=1)
indexer = core.indexer()
for i in range(0, len(events), 16):
    indexer.apply(events[i : i + 16])
retriever = Retriever(core.index, core.dense, core.sparse)
who = Principal("bench", "default", ("public",))
ranked = {mode: {qid: [(h.payload["doc_id"], h.payload["text"])
                       for h in retriever.retrieve(who, q, k, mode)]
                 for qid, q in questions.items()} for mode in ("hybrid", "dense", "sparse")}
Path(out).write_text(json.dumps(ranked))
core.index.close()
shutil.rmtree(core.settings.data_dir, ignore_errors=True)
"""


def baseline(rev: str, files: list[Path], docs: Path, items: list[EvalItem]) -> dict[str, dict]:
    """FreshRAG as of commit `rev` (a git worktree, this venv), scored like the rest."""
    work = scratch_dir("freshrag-baseline-src-")
    subprocess.run(["git", "worktree", "add", "--detach", str(work), rev], cwd=ROOT, check=True)
    try:
        out = work / "ranked.json"
        spec = [[str(f) for f in files], str(docs), {i.id: i.question for i in items}, str(out)]
        started = time.perf_counter()
        print(f"baseline {rev}: indexing {len(files)} pages with that commit's code", flush=True)
        subprocess.run(
            [sys.executable, "-c", _BASELINE, json.dumps([*spec, CANDIDATES])],
            cwd=work,
            env=child_env(work),
            check=True,
        )
        seconds = round(time.perf_counter() - started, 1)
        ranked = json.loads(out.read_text())
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(work)], cwd=ROOT, check=False)
    return {
        f"baseline_{mode}": {
            **score(items, {q: [tuple(h) for h in hits] for q, hits in per_q.items()}),
            "commit": rev,
            "seconds": seconds,
        }
        for mode, per_q in ranked.items()
    }


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
    ap.add_argument(
        "--baseline",
        metavar="REV",
        default=None,
        help="also score FreshRAG as of this git commit (indexed by that commit's code in a "
        "temporary worktree), e.g. the main an issue was filed against",
    )
    ap.add_argument(
        "--no-ablation",
        action="store_true",
        help="skip the ablation (a second index without chunk headers, each ranking step)",
    )
    ap.add_argument(
        "--stages",
        action="store_true",
        help="only the ranking stages' rows (bench/_stages.py), to quality_stages.json",
    )
    ap.add_argument(
        "--reranker",
        metavar="SPEC",
        default=None,
        help="with --stages: a FRESHRAG_RERANKER value (cross-encoder:<folder> or llm)",
    )
    ap.add_argument(
        "--questions",
        type=int,
        default=None,
        help="with --stages: the first N questions of each set (a smoke run)",
    )
    args = ap.parse_args()
    if args.stages:
        run_stages(args)
        return

    version = Settings().sample_django_version
    docs = django_docs(version, SAMPLES)
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
    pipelines, ablation = freshrag(files, docs, items, not args.no_ablation)
    result["pipelines"].update(pipelines)
    result["ablation"] = ablation
    if args.baseline:
        result["pipelines"].update(baseline(args.baseline, files, docs, items))
    from retrieval.encoders import DenseEncoder

    encoder = DenseEncoder(Settings().model)
    result["pipelines"]["llamaindex_defaults"] = llamaindex(files, docs, items, encoder)
    result["pipelines"]["llamaindex_192_0"] = llamaindex(
        files, docs, items, encoder, chunk_size=192, chunk_overlap=0
    )
    cols = ["doc_ndcg@10", "doc_mrr@10", "doc_hit@10", "passage_mrr@10", "passage_hit@10"]
    print(f"{'pipeline':24}" + "".join(f"{c:>16}" for c in cols) + f"{'chunks':>9}")
    for name, row in result["pipelines"].items():
        print(
            f"{name:24}"
            + "".join(f"{row[c]:>16.3f}" for c in cols)
            + f"{row.get('chunks', '-'):>9}"
        )
    if ablation:
        print(f"\nablation (doc MRR@10 / passage MRR@10), {len(items)} questions")
        print(
            f"{'headers':9}{'ranking':30}"
            + "".join(f"{m:>16}" for m in ("hybrid", "dense", "sparse"))
        )
        for headers in dict.fromkeys(r["headers"] for r in ablation):
            for name, _, _ in ABLATION:
                cells = {
                    r["mode"]: r
                    for r in ablation
                    if r["headers"] == headers and r["ranking"] == name
                }
                print(
                    f"{'yes' if headers else 'no':9}{name:30}"
                    + "".join(
                        f"{cells[m]['doc_mrr@10']:>9.3f} / {cells[m]['passage_mrr@10']:.3f}"
                        for m in ("hybrid", "dense", "sparse")
                    )
                )
    write(result, args.out)


def gold_and_others(
    every: list[Path], docs: Path, items: list[EvalItem], n: int | None
) -> list[Path]:
    """Every page (`n` None), or the gold pages of `items` and of the FAQ (every faq/
    page: the held-out set's gold) and `n` others."""
    if n is None:
        return every
    wanted = {d.removeprefix("django/") for i in items for d in gold_docs(i)}
    gold = [p for p in every if p.relative_to(docs).as_posix() in wanted or p.parent.name == "faq"]
    return gold + [p for p in every if p not in gold][:n]


def run_stages(args: argparse.Namespace) -> None:
    """`--stages`: the ranking stages' rows on one index of the pages (headers on)."""
    from bench import _stages
    from retrieval.answer.service import build_gateway
    from retrieval.encoders import DenseEncoder
    from retrieval.rerank.factory import build_reranker

    version = Settings().sample_django_version
    docs = django_docs(version, SAMPLES)
    dataset = args.dataset or default_path(version)
    items = [i for i in load(dataset) if i.answerable][: args.questions]
    files = gold_and_others(doc_files(docs), docs, items, args.docs)
    core, seconds = freshrag_index(files, docs, headers=True)
    DenseEncoder.limit_threads(1)  # as the API serves: one torch thread per request
    reranker = None
    if args.reranker:
        settings = core.settings.model_copy(update={"reranker": args.reranker})
        gateway = build_gateway(settings, core.dense) if args.reranker == "llm" else None
        reranker = build_reranker(settings, gateway)
    result = {
        "benchmark": "quality_stages",
        "dataset": str(dataset.relative_to(ROOT)) if dataset.is_relative_to(ROOT) else str(dataset),
        "pages": len(files),
        "chunks": core.index.count_chunks([]),
        "index_seconds": round(seconds, 1),
        **_stages.stages(core, docs, items, reranker, args.questions, score),
    }
    core.index.close()
    _stages.print_rows(result)
    out = args.out if args.out != RESULTS / "quality.json" else RESULTS / "quality_stages.json"
    write(result, out, echo=False)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
