"""Scores: IR metrics from ranx, context metrics from RAGAS, freshness as a RAGAS custom
metric, and the answer and refusal rates; pure functions the scenario modules call."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from evals.dataset import EvalItem

os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")
# ranx imports matplotlib, whose first import on a machine logs "generated new fontManager"
# at INFO: noise in a nightly job's output.
logging.getLogger("matplotlib").setLevel(logging.WARNING)

IR_METRICS = ("ndcg@10", "mrr@10", "recall@5", "recall@10")
RAGAS_METRICS = (
    "id_based_context_precision",
    "id_based_context_recall",
    "non_llm_context_precision_with_reference",
    "non_llm_context_recall",
)


def ir_scores(
    gold: dict[str, list[str]], ranked: dict[str, list[str]]
) -> dict[str, dict[str, float]]:
    """Per-question nDCG@10, MRR@10, recall@5/10 (binary relevance) with ranx."""
    from numba.core.errors import NumbaTypeSafetyWarning
    from ranx import Qrels, Run, evaluate

    # ranx's jitted code casts int relevance to float; numba warns (in ANSI colours) on
    # every fresh compile. The cast is exact for 0/1 judgements.
    warnings.filterwarnings("ignore", category=NumbaTypeSafetyWarning)
    qrels = Qrels({q: dict.fromkeys(ids, 1) for q, ids in gold.items()})
    run_dict: dict[str, dict[str, float]] = {}
    for q in gold:
        scores: dict[str, float] = {}
        for rank, cid in enumerate(ranked.get(q, []), start=1):
            scores.setdefault(cid, 1.0 / rank)  # a context seen twice keeps its best rank
        run_dict[q] = scores
    per_metric = evaluate(
        qrels, Run(run_dict), list(IR_METRICS), return_mean=False, make_comparable=True
    )
    order = list(qrels.keys())
    return {q: {m: float(per_metric[m][i]) for m in IR_METRICS} for i, q in enumerate(order)}


def ragas_scores(samples: list[dict[str, Any]]) -> list[dict[str, float]]:
    """ID-based and string-based (non-LLM) context precision and recall for each sample.

    Each sample: retrieved_context_ids, reference_context_ids, retrieved_contexts,
    reference_contexts (the last two may be empty: those metrics are then NaN).
    """
    from ragas.dataset_schema import SingleTurnSample
    from ragas.metrics._context_precision import (
        IDBasedContextPrecision,
        NonLLMContextPrecisionWithReference,
    )
    from ragas.metrics._context_recall import IDBasedContextRecall, NonLLMContextRecall

    id_metrics = [IDBasedContextPrecision(), IDBasedContextRecall()]
    text_metrics = [NonLLMContextPrecisionWithReference(), NonLLMContextRecall()]

    async def score_one(s: dict[str, Any]) -> dict[str, float]:
        out: dict[str, float] = {}
        sample = SingleTurnSample(**s)
        for m in id_metrics:
            out[m.name] = (
                float(await m.single_turn_ascore(sample)) if s["retrieved_context_ids"] else 0.0
            )
        for m in text_metrics:
            usable = s.get("retrieved_contexts") and s.get("reference_contexts")
            out[m.name] = float(await m.single_turn_ascore(sample)) if usable else math.nan
        return out

    async def score_all() -> list[dict[str, float]]:
        return [await score_one(s) for s in samples]

    return asyncio.run(score_all())


def freshness_metric():  # noqa: ANN201
    """Freshness as a RAGAS numeric metric: 1 within the SLO, linear to 0 at 3x SLO, 0 if missed."""
    from ragas.metrics import numeric_metric

    @numeric_metric(name="freshness", allowed_values=(0.0, 1.0))
    def freshness(lag_s: float | None, slo_s: float) -> float:
        if lag_s is None:
            return 0.0
        if lag_s <= slo_s:
            return 1.0
        return max(0.0, 1.0 - (lag_s - slo_s) / (2 * slo_s))

    return freshness


def mean(values: list[float]) -> float | None:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return sum(clean) / len(clean) if clean else None


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (what an SLO means by p95)."""
    clean = sorted(v for v in values if v is not None)
    if not clean:
        return None
    rank = max(1, math.ceil(p / 100 * len(clean)))
    return clean[rank - 1]


def answerable(items: list[EvalItem]) -> list[EvalItem]:
    """The questions relevance can rank: unanswerable ones have no gold."""
    return [i for i in items if i.answerable]


def answer_scores(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Cites-gold and refusal rates, and citation precision: the share of the documents an
    answer cites that are gold (over answers to answerable questions that cite any), so an
    answer padded with unrelated sources scores lower even when one citation is right."""
    precise = [
        len(set(r["cited"]) & set(r["gold"])) / len(r["cited"])
        for r in rows
        if r["cites_gold"] is not None and r["cited"]
    ]
    return {
        "answer_cites_gold": mean(
            [float(r["cites_gold"]) for r in rows if r["cites_gold"] is not None]
        ),
        "answer_citation_precision": mean(precise),
        "answer_refusal_rate": mean([float(r["refused"]) for r in rows]),
    }


def refusal_scores(items: list[EvalItem], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Refusals split by what the right answer is.

    `unanswerable_refusal_rate`: refusals on the unanswerable questions (higher is better;
    1 - it is how often the service answered what its sources do not say).
    `false_refusal_rate`: refusals on the answerable ones (lower is better). Each row also
    gets its question's `answerable` flag, for the report. A set without unanswerable
    questions has no `unanswerable_refusal_rate` (None), never a 0 that looks like a fall.
    """
    by_id = {i.id: i.answerable for i in items}
    for r in rows:
        r["answerable"] = by_id.get(r["id"], True)
    unanswerable = [float(r["refused"]) for r in rows if not r["answerable"]]
    return {
        "unanswerable_questions": len(unanswerable),
        "unanswerable_refusal_rate": mean(unanswerable),
        "false_refusal_rate": mean([float(r["refused"]) for r in rows if r["answerable"]]),
    }
