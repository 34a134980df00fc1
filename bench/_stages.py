"""The optional ranking stages (issue 28), one row each, on the dev set and the held-out FAQ.

One index of the pages, served in this process. Each row runs every question once with
one request's stages (`retrieval.stages.Stages`), hybrid and grouped by section as
`/retrieve` answers by default, and is scored like `bench.quality` (document nDCG@10 and
MRR@10, passage MRR@10). Its cost is the time of each `Retriever.retrieve` call, the query
already embedded (the same vector for every row, so the rows differ only by their stages).
The rows alternate question by question, so load on the machine falls on all of them alike.

The held-out FAQ: the FAQ pages are then re-indexed without their question headings
(`evals.dataset.build_heldout_faq`, as `freshrag eval --heldout-faq` does through the
service) and the FAQ's own questions asked.

"every stage off, explicitly" sends each stage's off value: its hits must equal the
default row's (`same_as_default`: the share of questions with the same hits, points of
equal score in any order) and its cost the default's. "default, again" repeats the
default: what differs there is the engine's own doing (at an exact tie on the last place
Qdrant Edge may return either point).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evals.dataset import EvalItem, build_heldout_faq
from freshrag.runtime import Core
from ingest.publisher import file_event
from retrieval.rerank.base import Reranker
from retrieval.search import Principal, Ranking, Retriever
from retrieval.stages import Stages, half_life_s
from retrieval.store.types import SearchHit

WHO = Principal("bench", "default", ("public",))
TOP_K = 10  # the metrics read the first 10 hits
RERANK_CANDIDATES = (10, 20, 30)


def stage_rows(ranking: Ranking, reranker: Reranker | None) -> list[tuple[str, Stages]]:
    """(name, stages) of every row: the default, each stage alone, the reranker at three
    candidate counts when there is one."""
    f = ranking.fusion
    off = Stages(
        fusion="rrf",
        dense_weight=f.dense_weight,
        sparse_weight=f.sparse_weight,
        diversity=0.0,
        recency_s=0.0,
        rerank=False,
    )
    rows: list[tuple[str, Stages]] = [
        ("default (every stage off)", Stages()),
        ("default, again", Stages()),  # the engine's own call-to-call difference
        ("every stage off, explicitly", off),
        (f"fusion dbsf {f.dense_weight:g}:{f.sparse_weight:g}", Stages(fusion="dbsf")),
        ("fusion dbsf 1:1", Stages(fusion="dbsf", dense_weight=1.0, sparse_weight=1.0)),
        ("fusion rrf 1:1", Stages(fusion="rrf", dense_weight=1.0, sparse_weight=1.0)),
        ("diversity 0.1", Stages(diversity=0.1)),
        ("diversity 0.3", Stages(diversity=0.3)),
        ("diversity 0.5", Stages(diversity=0.5)),
        ("recency 30d", Stages(recency_s=half_life_s("30d"))),
        ("recency 365d", Stages(recency_s=half_life_s("365d"))),
    ]
    if reranker is not None:
        rows += [
            (f"rerank {reranker.name} {n}", Stages(rerank=True, rerank_candidates=n))
            for n in RERANK_CANDIDATES
        ]
    return rows


@dataclass
class Runs:
    """Per row: each question's ranked (doc_id, text) and each call's seconds."""

    ranked: dict[str, dict[str, list[tuple[str, str]]]] = field(default_factory=dict)
    hits: dict[str, dict[str, list[SearchHit]]] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)


def run_rows(
    retriever: Retriever, items: list[EvalItem], rows: list[tuple[str, Stages]], desc: str
) -> Runs:
    """Every row over every question, interleaved question by question, each question
    starting at the next row."""
    out = Runs()
    for name, _ in rows:
        out.ranked[name], out.hits[name], out.seconds[name] = {}, {}, []
    for n, item in enumerate(tqdm(items, desc=desc, unit="question")):
        vector = retriever.dense.encode_query(item.question)
        # Each row first as often as the others: a question's first call runs colder.
        turn = n % len(rows)
        for name, stages in rows[turn:] + rows[:turn]:
            started = time.perf_counter()
            hits = retriever.retrieve(
                WHO, item.question, TOP_K, "hybrid", dense_vector=vector, stages=stages
            )
            out.seconds[name].append(time.perf_counter() - started)
            out.hits[name][item.id] = hits
            out.ranked[name][item.id] = [(h.payload["doc_id"], h.payload["text"]) for h in hits]
    return out


def cost(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {
        "ms_p50": round(float(np.percentile(ms, 50)), 2),
        "ms_p99": round(float(np.percentile(ms, 99)), 2),
    }


def canonical(hits: list[SearchHit]) -> list[tuple]:
    """Hits as comparable rows, equal scores in a fixed order: Qdrant Edge returns points
    of exactly equal score (RRF ties are common) in no fixed order, call to call."""
    rows = [
        (round(h.score, 7), h.payload["doc_id"], h.payload.get("section"), h.payload["text"])
        for h in hits
    ]
    return sorted(rows, key=lambda r: (-r[0], r[1:]))


def same_share(a: dict[str, list[SearchHit]], b: dict[str, list[SearchHit]]) -> float:
    """The share of questions whose hits are the same in `a` and `b` (up to ties)."""
    return sum(canonical(a[q]) == canonical(b[q]) for q in a) / max(1, len(a))


def settled(core: Core) -> None:
    """The index optimised as the service keeps it (HNSW built), before any timing, so no
    optimiser swap lands between two rows of one question."""
    optimize = getattr(core.index, "optimize", None)
    if optimize is not None:
        optimize(wait=True)


def heldout_reindexed(core: Core, docs: Path) -> list[EvalItem]:
    """The FAQ pages re-indexed without their question headings (version 2 over the
    sample's 1); the questions whose page was indexed."""
    faq = build_heldout_faq(docs)
    present = {d for d in faq.pages if core.index.get_document("default", d) is not None}
    events = [
        file_event(path, doc_id, version=2, mime="text/x-rst", data=text.encode())
        for doc_id, (path, text) in faq.pages.items()
        if doc_id in present
    ]
    indexer = core.indexer()
    indexer.apply(events)
    indexer.processor.close()
    return [i for i in faq.items if set(i.gold_doc_ids) <= present]


def stages(
    core: Core,
    docs: Path,
    dev: list[EvalItem],
    reranker: Reranker | None,
    questions: int | None,
    score,  # noqa: ANN001  bench.quality.score
) -> dict:
    """Every stage row on the dev set, then on the held-out FAQ (the index is changed for
    it: run last)."""
    retriever = Retriever(core.index, core.dense, core.sparse, Ranking.of(core.settings), reranker)
    rows = stage_rows(retriever.ranking, reranker)
    dev = dev[:questions] if questions else dev
    settled(core)
    on_dev = run_rows(retriever, dev, rows, "stages: dev set")
    heldout = heldout_reindexed(core, docs)
    settled(core)
    heldout = heldout[:questions] if questions else heldout
    on_faq = run_rows(retriever, heldout, rows, "stages: held-out FAQ")
    default = rows[0][0]
    table = []
    for name, asked in rows:
        d, h = score(dev, on_dev.ranked[name]), score(heldout, on_faq.ranked[name])
        table.append(
            {
                "stage": name,
                "stages": asked.asked(),
                "dev_ndcg@10": d["doc_ndcg@10"],
                "dev_mrr@10": d["doc_mrr@10"],
                "dev_passage_mrr@10": d["passage_mrr@10"],
                "heldout_ndcg@10": h["doc_ndcg@10"],
                "heldout_mrr@10": h["doc_mrr@10"],
                "heldout_passage_mrr@10": h["passage_mrr@10"],
                **cost(on_dev.seconds[name] + on_faq.seconds[name]),
                "same_as_default": round(
                    same_share(
                        on_dev.hits[name] | on_faq.hits[name],
                        on_dev.hits[default] | on_faq.hits[default],
                    ),
                    4,
                ),
            }
        )
    return {
        "dev_questions": len(dev),
        "heldout_questions": len(heldout),
        "top_k": TOP_K,
        "reranker": None if reranker is None else reranker.name,
        "timed": "Retriever.retrieve per question, query embedded beforehand, 1 torch thread",
        "rows": table,
    }


def print_rows(result: dict) -> None:
    cols = ["dev_ndcg@10", "dev_mrr@10", "heldout_ndcg@10", "heldout_mrr@10", "ms_p50", "ms_p99"]
    print(
        f"\nstages ({result['dev_questions']} dev, {result['heldout_questions']} held-out questions)"
    )
    print(f"{'stage':32}" + "".join(f"{c:>16}" for c in cols) + f"{'same':>7}")
    for row in result["rows"]:
        print(
            f"{row['stage']:32}"
            + "".join(f"{row[c]:>16.3f}" for c in cols)
            + f"{row['same_as_default']:>7.2f}"
        )
