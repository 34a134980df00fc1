"""What an owner reads per area (relevance, answers, freshness, latency, index…): each row's
value, thresholds, previous value and status, and the area's headline.

The terminal table and the HTML page's cards both render this one view, so they never
disagree about a number or a status.
"""

from __future__ import annotations

from typing import Any

from evals.formatting import fmt, rule_text
from evals.summary import MODES, area_of

STATUS_ORDER = {"fail": 4, "warn": 3, "pass": 2, "skipped": 1, "n/a": 0, "info": 0}

# What an owner reads per area: (metric, label, brief). `{mode}` expands to each mode that
# ran. Brief rows make the cards and the terminal table; the report's checks table has all.
AREA_ROWS: dict[str, list[tuple[str, str, bool]]] = {
    "relevance": [
        ("{mode}.ndcg@10", "nDCG@10 {mode}", True),
        ("{mode}.recall@10", "recall@10 {mode}", True),
        ("{mode}.mrr@10", "MRR@10 {mode}", False),
        ("relevance.stale_hit_rate", "stale hits", True),
    ],
    "answers": [
        ("answers.answer_cites_gold", "cite a gold doc", True),
        ("answers.answer_refusal_rate", "refused", True),
        ("answers.unanswerable_refusal_rate", "refused when unanswerable", True),
        ("answers.false_refusal_rate", "refused when answerable", True),
        ("answers.answer_citation_precision", "citations on gold", False),
        ("answers.answer_cached_rate", "from the cache", False),
    ],
    "judge": [
        ("judge.faithfulness", "faithfulness", True),
        ("judge.answer_relevancy", "answer relevancy", True),
        ("judge.llm_context_precision", "context precision", True),
    ],
    "usage": [
        ("usage.cost_per_answer_usd", "cost per answered question", True),
        ("usage.cost_usd", "cost of the run's answers", True),
        ("usage.provider_calls", "provider calls", False),
        ("usage.unpriced_calls", "calls without a price", False),
        ("usage.estimated_calls", "calls with estimated tokens", False),
        ("usage.cache_saved_usd", "cache savings (last 24 h)", True),
        ("usage.cache_hit_rate", "cache hit rate (last 24 h)", True),
        ("usage.cache_saved_tokens", "tokens the cache saved (24 h)", False),
        ("usage.window_cost_usd", "provider cost (last 24 h)", False),
    ],
    "freshness": [
        ("freshness.freshness", "freshness score", True),
        ("freshness.lag_p50_s", "lag p50", True),
        ("freshness.lag_p95_s", "lag p95", True),
        ("freshness.lag_p99_s", "lag p99", False),
        ("freshness.missed_rate", "missed", True),
        ("freshness.deleted_returned", "deleted returned", True),
        ("freshness.stale_hit_rate", "stale hits", True),
    ],
    "latency": [
        ("{mode}.latency_p50_ms", "p50 {mode}", True),
        ("{mode}.latency_p95_ms", "p95 {mode}", False),
        ("answers.answer_latency_p50_ms", "p50 /answer", True),
        ("answers.answer_latency_p95_ms", "p95 /answer", False),
    ],
    "index": [
        ("index.documents", "documents", True),
        ("index.chunks", "chunks", True),
        ("index.dead_letters", "dead letters", True),
        ("index.backlog", "backlog", True),
    ],
    "replay": [
        ("replay.docs_changed", "docs changed", True),
        ("replay.chunks_reembedded", "chunks re-embedded", True),
        ("replay.reembedded_share", "share re-embedded", True),
        ("replay.update_seconds", "searchable after", True),
    ],
}
AREA_TITLES = {
    "relevance": "Relevance",
    "answers": "Answers",
    "judge": "Judged answers",
    "usage": "Usage and cost",
    "freshness": "Freshness",
    "latency": "Latency",
    "index": "Index state",
    "replay": "Release replay",
}
# The headline card's big number per area.
HEADLINE = {
    "relevance": "hybrid.ndcg@10",
    "answers": "answers.answer_cites_gold",
    "judge": "judge.faithfulness",
    "usage": "usage.cost_per_answer_usd",
    "freshness": "freshness.freshness",
    "latency": "hybrid.latency_p50_ms",
    "index": "index.documents",
    "replay": "replay.chunks_reembedded",
}


def _rows_for(area: str, results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    modes = list(results.get("relevance", {}).get("modes", {})) or ["hybrid"]
    rows: list[tuple[str, str, bool]] = []
    for metric, label, brief in AREA_ROWS.get(area, []):
        if "{mode}" in metric:
            rows += [(metric.format(mode=m), label.format(mode=m), brief) for m in modes]
        else:
            rows.append((metric, label, brief))
    return rows


def _display_area(metric: str) -> str:
    """Where a threshold's metric shows: latency metrics under Latency, mode scores under Relevance."""
    area = area_of(metric)
    if "latency" in metric:
        return "latency"
    if area in MODES:
        return "relevance"
    return area


def overview(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Per area: its rows (value, thresholds, previous, status), status and headline.

    The terminal table and the report's cards both render this.
    """
    summary = results["summary"]
    previous = (results.get("previous") or {}).get("summary") or {}
    skipped = results.get("skipped_areas") or {}
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for c in results.get("checks", []):
        by_metric.setdefault(c["metric"], []).append(c)
    jumps = {j["metric"]: j for j in results.get("latency_jumps", [])}
    areas = []
    for area in AREA_TITLES:
        rows = _rows_for(area, results)
        listed = {m for m, _, _ in rows}
        rows += [
            (m, m, True) for m in by_metric if _display_area(m) == area and m not in listed
        ]  # a threshold on a metric no row shows still gets its line
        out_rows = []
        left_out: dict[str, str] = {}  # area whose metrics did not run → why
        for metric, label, brief in rows:
            cs = by_metric.get(metric, [])
            if area == "index" and not cs and results.get("index"):
                pass  # the index card lists what the service does not expose too: "n/a"
            elif metric not in summary and all(c["status"] == "skipped" for c in cs):
                if cs:
                    left_out[area_of(metric)] = cs[0].get("reason", "not run")
                continue  # nothing measured: one "skipped" line says it, not a row of n/a
            statuses = [c["status"] for c in cs]
            note = ""
            if metric in jumps:
                j = jumps[metric]
                statuses.append("warn")
                note = f"×{j['ratio']:.1f} since last run ({fmt(metric, j['previous'])})"
            status = max(statuses, key=STATUS_ORDER.get) if statuses else "info"
            out_rows.append(
                {
                    "metric": metric,
                    "label": label,
                    "value": fmt(metric, summary.get(metric)),
                    "threshold": ", ".join(rule_text(metric, c["rule"], c["limit"]) for c in cs),
                    "previous": fmt(metric, previous[metric]) if metric in previous else "",
                    "status": status,
                    "note": note,
                    # Gated or flagged rows are always brief: they are why the card has its colour.
                    "brief": brief or status in ("fail", "warn") or bool(cs),
                }
            )
        if area in ("judge", "replay") and not out_rows:
            continue  # optional extras: no card when not asked for
        skip = None
        if not out_rows:
            skip = skipped.get(area) or next(iter(left_out.values()), None) or "not run"
            if area == "latency" and "relevance" in skipped:
                skip = skipped["relevance"]
        statuses = [r["status"] for r in out_rows]
        status = max(statuses, key=STATUS_ORDER.get) if statuses else "skipped"
        if out_rows and status in ("info", "n/a"):
            status = "info"
        head = next((r for r in out_rows if r["metric"] == HEADLINE[area]), None)
        if head is None or head["value"] == "n/a":  # lead with what the service does expose
            head = next((r for r in out_rows if r["value"] != "n/a"), head)
        head = head or (out_rows[0] if out_rows else None)
        areas.append(
            {
                "area": area,
                "title": AREA_TITLES[area],
                "status": status,
                "skipped": skip,
                "partly_skipped": _grouped(left_out) if out_rows else "",
                "headline": head,
                "rows": out_rows,
            }
        )
    return areas


def _grouped(left_out: dict[str, str]) -> str:
    """{"dense": "mode not run", "sparse": "mode not run"} → "dense, sparse (mode not run)"."""
    by_reason: dict[str, list[str]] = {}
    for area, why in left_out.items():
        by_reason.setdefault(why, []).append(area)
    return "; ".join(f"{', '.join(areas)} ({why})" for why, areas in by_reason.items())


# Each provider asked alone (`--each-provider`): (metric, column heading).
ALONE_COLUMNS = [
    ("answer_cites_gold", "cites gold"),
    ("answer_citation_precision", "citation precision"),
    ("unanswerable_refusal_rate", "unanswerable refused"),
    ("false_refusal_rate", "answerable refused"),
    ("provider_failures", "provider failures"),
    ("answer_latency_p50_ms", "p50"),
    ("answer_latency_p95_ms", "p95"),
]


def providers_alone(results: dict[str, Any]) -> list[dict[str, str]]:
    """One row per provider asked alone (`--each-provider`), formatted for the report."""
    alone = (results.get("answers") or {}).get("alone") or {}
    return [
        {"provider": name, **{col: fmt(col, scores.get(col)) for col, _ in ALONE_COLUMNS}}
        for name, scores in alone.items()
    ]


# A candidate prompt beside production (`--prompt`): the answer rows both outputs show.
COMPARED_ROWS = [
    *((m, label) for m, label, _ in AREA_ROWS["answers"] if m != "answers.answer_cached_rate"),
    ("answers.answer_latency_p50_ms", "p50 /answer"),
]
VERDICT_STATUS = {"pass": "pass", "regression": "fail", "inconclusive": "n/a"}


def _delta(metric: str, candidate: Any, production: Any) -> str:
    """Candidate minus production, signed, in the metric's unit ("" when one is missing)."""
    if not isinstance(candidate, int | float) or not isinstance(production, int | float):
        return ""
    d = candidate - production
    return ("+" if d > 0 else "−" if d < 0 else "±") + fmt(metric, abs(d))


def prompt_comparison(results: dict[str, Any], limit: int = 10) -> dict[str, Any] | None:
    """The candidate's answer metrics beside production's, the gate's checks on them, its
    verdict, and the questions whose outcome differs; None without `--prompt`."""
    c = results.get("prompt_comparison")
    if not c:
        return None
    cand, prod = c.get("candidate_scores") or {}, c.get("production_scores") or {}
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for check in c.get("checks", []):
        by_metric.setdefault(check["metric"], []).append(check)
    listed = [m for m, _ in COMPARED_ROWS]
    rows = []
    for metric, label in [*COMPARED_ROWS, *((m, m) for m in by_metric if m not in listed)]:
        cs = by_metric.get(metric, [])
        if metric not in cand and metric not in prod and not cs:
            continue
        statuses = [x["status"] for x in cs]
        rows.append(
            {
                "metric": metric,
                "label": label,
                "candidate": fmt(metric, cand.get(metric)),
                "production": fmt(metric, prod.get(metric)),
                "delta": _delta(metric, cand.get(metric), prod.get(metric)),
                "threshold": ", ".join(rule_text(metric, x["rule"], x["limit"]) for x in cs),
                "status": max(statuses, key=STATUS_ORDER.get) if statuses else "info",
            }
        )
    changed = [
        p
        for p in c.get("pairs", [])
        if p["compared"]
        and any(p["candidate"][k] != p["production"][k] for k in ("refused", "cites_gold"))
    ]
    verdict = c.get("verdict", "inconclusive")
    return {
        **{k: c.get(k) for k in ("selection", "name", "candidate", "production", "reason")},
        "questions": c.get("questions", 0),
        "compared": c.get("compared", 0),
        "not_compared": c.get("not_compared", []),
        "verdict": verdict,
        "status": VERDICT_STATUS.get(verdict, "n/a"),
        "rows": rows,
        "changed": len(changed),
        "changed_rows": changed[:limit],
    }
