"""Relevance: the questions through `/retrieve` (each mode) and `/answer`, scored per question."""

from __future__ import annotations

from typing import Any

from evals.client import ServiceClient
from evals.dataset import EvalItem, context_id
from evals.metrics import (
    IR_METRICS,
    RAGAS_METRICS,
    answer_scores,
    ir_scores,
    mean,
    percentile,
    ragas_scores,
    refusal_scores,
)
from evals.progress import bar


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
        for item in bar(items, progress=progress, desc=f"relevance: {mode}", unit="q"):
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
                    "gold_rank": next(
                        (n for n, cid in enumerate(r["ids"], 1) if cid in set(gold[qid])), None
                    ),
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


def _by_provider(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows by the provider that answered ("none": refused before any was asked)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["provider"], []).append(r)
    return groups


def answer_row(item: EvalItem, result: dict[str, Any]) -> dict[str, Any]:
    """One `/answer` result as the report keeps it, with what the scores read."""
    cited = sorted({c["doc_id"] for c in result["citations"]})
    timings = result.get("timings") or {}
    return {
        "id": item.id,
        "question": item.question,
        "answer": result["answer"],
        "contexts": [c["text"] for c in result["citations"] if c.get("text")],
        "cited": cited,
        "gold": item.gold_doc_ids,
        "refused": result["refused"],
        "cached": bool(result.get("cached")),
        "timed_out": bool(result.get("timed_out")),
        "provider": result["provider"],
        "prompt": result.get("prompt"),  # the version that answered (name@version)
        # Providers that did not serve and why (error, circuit_open, invalid_citations…).
        "skipped": [a["outcome"] for a in result.get("attempts") or [] if a["outcome"] != "served"],
        "cites_gold": bool(set(cited) & set(item.gold_doc_ids)) if item.gold_doc_ids else None,
        "latency_ms": timings.get("total_ms") or result.get("client_ms"),
    }


def score_answers(rows: list[dict[str, Any]], cache_bypass: bool | None) -> dict[str, Any]:
    """The answer metrics of `rows`, overall and per provider, with latency and the rows.

    Cached answers are left out of the latency percentiles (a cache hit says nothing about
    answering speed); `cache_bypass` False (the server rejected `"cache": false`) adds a note.
    """
    fresh = [r["latency_ms"] for r in rows if r["latency_ms"] and not r["cached"]]
    out: dict[str, Any] = {
        **answer_scores(rows),
        "by_provider": {
            name: {"questions": len(group), **answer_scores(group)}
            for name, group in _by_provider(rows).items()
        },
        "answer_cached_rate": mean([float(r["cached"]) for r in rows]),
        "answer_timeouts": sum(r["timed_out"] for r in rows),
        "answer_latency_p50_ms": percentile(fresh, 50),
        "answer_latency_p95_ms": percentile(fresh, 95),
        "cache_bypassed": cache_bypass is True,
        "rows": rows,
    }
    if cache_bypass is False:
        out["note"] = (
            'the service rejected "cache": false, so answers may come from the answer cache; '
            "latency percentiles leave cached answers out"
        )
    return out


def run_answers(
    client: ServiceClient,
    items: list[EvalItem],
    progress: bool = True,
    provider: str | None = None,
) -> dict[str, Any] | None:
    """How often `/answer` cites a gold document, and how often it refuses.

    Requests bypass the answer cache (see `score_answers` for a server that cannot).
    `provider` asks that member of the chain alone (no fallback).
    """
    rows = []
    desc = f"answers: {provider} alone" if provider else "answers"
    for item in bar(items, progress=progress, desc=desc, unit="q"):
        result = client.answer(item.question, provider=provider)
        if result is None:
            return None
        rows.append(answer_row(item, result))
    return score_answers(rows, client.cache_bypass)


def run_each_provider(
    client: ServiceClient, items: list[EvalItem], progress: bool = True
) -> dict[str, dict[str, Any]]:
    """Every provider of the service's chain asked alone over the same questions.

    `by_provider` groups a chain's answers by who happened to serve them, so a fallback
    that only ever answers what the first provider failed looks better or worse than it
    is; this scores each one on everything. Refusals before any provider (no source names
    the question's subject) count for each, as they would if it were the only one.
    """
    out: dict[str, dict[str, Any]] = {}
    for name in client.providers():
        result = run_answers(client, items, progress, provider=name)
        if result is None:
            break
        result.update(refusal_scores(items, result["rows"]))
        out[name] = {
            "questions": len(result["rows"]),
            **{
                k: v
                for k, v in result.items()
                if k not in ("rows", "by_provider", "cache_bypassed", "note")
            },
            # Questions the provider was asked but gave no grounded answer for (it failed,
            # its circuit was open, or it cited outside the sources): refused for it.
            "provider_failures": sum(1 for r in result["rows"] if r["skipped"]),
        }
    return out
