"""Relevance: the questions through `/retrieve` (each mode) and `/answer`, scored per question."""

from __future__ import annotations

from typing import Any

from tqdm import tqdm

from evals.client import ServiceClient
from evals.dataset import EvalItem, context_id
from evals.metrics import IR_METRICS, RAGAS_METRICS, ir_scores, mean, percentile, ragas_scores


def _ids(item: EvalItem, hits: list[dict[str, Any]]) -> list[str]:
    if item.gold_contexts:
        return [context_id(h["doc_id"], h.get("section")) for h in hits]
    return [h["doc_id"] for h in hits]


def run_relevance(
    client: ServiceClient,
    items: list[EvalItem],
    modes: list[str],
    top_k: int = 10,
    progress: bool = True,
) -> dict[str, Any]:
    out: dict[str, Any] = {"modes": {}, "questions": {}}
    hits_seen = stale = 0
    for mode in modes:
        records = []
        for item in tqdm(items, desc=f"relevance: {mode}", unit="q", disable=not progress):
            hits, ms = client.retrieve(item.question, mode, top_k)
            hits_seen += len(hits)
            stale += client.count_stale(hits)
            records.append({"item": item, "hits": hits, "latency_ms": ms, "ids": _ids(item, hits)})
        gold = {r["item"].id: (r["item"].gold_contexts or r["item"].gold_doc_ids) for r in records}
        ir = ir_scores(gold, {r["item"].id: r["ids"] for r in records})
        rg = ragas_scores(
            [
                {
                    "retrieved_context_ids": r["ids"],
                    "reference_context_ids": gold[r["item"].id],
                    "retrieved_contexts": [h["text"] for h in r["hits"]],
                    "reference_contexts": r["item"].gold_passages,
                }
                for r in records
            ]
        )
        per_q = []
        for r, scores in zip(records, rg, strict=True):
            qid = r["item"].id
            per_q.append(
                {
                    "id": qid,
                    "question": r["item"].question,
                    "gold": gold[qid],
                    "retrieved": r["ids"][:5],
                    "latency_ms": round(r["latency_ms"], 2),
                    **ir[qid],
                    **scores,
                }
            )
        latencies = [r["latency_ms"] for r in records]
        out["modes"][mode] = {
            **{m: mean([q[m] for q in per_q]) for m in IR_METRICS + RAGAS_METRICS},
            "latency_p50_ms": percentile(latencies, 50),
            "latency_p95_ms": percentile(latencies, 95),
            "latencies_ms": [round(v, 2) for v in latencies],
        }
        out["questions"][mode] = per_q
    out["stale_hit_rate"] = stale / hits_seen if hits_seen else 0.0
    out["hits_checked"] = hits_seen
    return out


def run_answers(
    client: ServiceClient, items: list[EvalItem], progress: bool = True
) -> dict[str, Any] | None:
    """How often `/answer` cites a gold document, and how often it refuses."""
    rows = []
    for item in tqdm(items, desc="answers", unit="q", disable=not progress):
        result = client.answer(item.question)
        if result is None:
            return None
        cited = {c["doc_id"] for c in result["citations"]}
        rows.append(
            {
                "id": item.id,
                "question": item.question,
                "answer": result["answer"],
                "contexts": [c["text"] for c in result["citations"] if c.get("text")],
                "refused": result["refused"],
                "provider": result["provider"],
                "cites_gold": bool(cited & set(item.gold_doc_ids)) if item.gold_doc_ids else None,
                "latency_ms": result["timings"].get("total_ms"),
            }
        )
    return {
        "answer_cites_gold": mean(
            [float(r["cites_gold"]) for r in rows if r["cites_gold"] is not None]
        ),
        "answer_refusal_rate": mean([float(r["refused"]) for r in rows]),
        "answer_latency_p50_ms": percentile([r["latency_ms"] for r in rows if r["latency_ms"]], 50),
        "rows": rows,
    }
