"""The report's usage section: what the run's answers cost, and what the answer cache saved.

Both come from the service's own ledger (GET /usage), not from counting here: the cost
of the eval's answers is its key's calls over the answers' window (`scope=key`) with the
prompt versions that answered them (a candidate prompt is costed apart), divided by the
questions they answered (a refusal answers nothing); the cache's savings are the
service's over the last `window_h` hours (every key's when the eval's key is an admin
key, else its own). The eval's answers bypass the cache, so they save nothing
themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from evals.client import ServiceClient


def iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def run_usage(
    client: ServiceClient,
    started: datetime,
    ended: datetime,
    rows: list[dict[str, Any]],
    window_h: float = 24.0,
) -> dict[str, Any] | str:
    """The usage section for answers asked in [started, ended), or why there is none."""
    until = ended + timedelta(seconds=1)  # the ledger's writer may stamp a row late
    run = client.usage(iso(started), iso(until), "key")
    if isinstance(run, str):
        return run
    day = client.usage(iso(until - timedelta(hours=window_h)), iso(until), "all")
    scope = "all"
    if isinstance(day, str):  # not an admin key: its own calls only
        day = client.usage(iso(until - timedelta(hours=window_h)), iso(until), "key")
        scope = "key"
    if isinstance(day, str):
        return day
    return usage_section(of_prompts(run, rows), day["total"], answered(rows), window_h, scope)


def of_prompts(totals: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The totals of the prompt versions that answered `rows` (a candidate prompt asked in
    the same window is someone else's cost); all of them when the rows name none."""
    refs = {r["prompt"] for r in rows if r.get("prompt")}
    picked = [p for p in totals.get("prompts") or [] if p.get("prompt") in refs]
    if not refs or not picked:
        return totals["total"]
    keys = {k for p in picked for k, v in p.items() if isinstance(v, int | float)}
    return {k: sum(p.get(k) or 0 for p in picked) for k in keys}


def answered(rows: list[dict[str, Any]]) -> int:
    """Questions the run got an answer to (not refused, not timed out)."""
    return sum(1 for r in rows if not r.get("refused") and not r.get("timed_out"))


def usage_section(
    run: dict[str, Any],
    window: dict[str, Any],
    answered: int,
    window_h: float,
    scope: str,
) -> dict[str, Any]:
    """The numbers the report shows (flat, so the gate and the trends read them too)."""
    cost = float(run.get("cost_usd") or 0.0)
    calls, hits = int(window.get("calls") or 0), int(window.get("cache_hits") or 0)
    return {
        "answered": answered,
        "provider_calls": int(run.get("calls") or 0),
        "input_tokens": int(run.get("input_tokens") or 0),
        "output_tokens": int(run.get("output_tokens") or 0),
        "estimated_calls": int(run.get("estimated_calls") or 0),
        "unpriced_calls": int(run.get("unpriced_calls") or 0),
        "cost_usd": round(cost, 8),
        "cost_per_answer_usd": round(cost / answered, 8) if answered else None,
        "window_hours": window_h,
        "window_scope": scope,  # "all": every key of the service; "key": the eval's own
        "window_cost_usd": round(float(window.get("cost_usd") or 0.0), 8),
        "cache_hits": hits,
        "cache_hit_rate": round(hits / (hits + calls), 4) if hits + calls else None,
        "cache_saved_tokens": int(window.get("saved_tokens") or 0),
        "cache_saved_usd": round(float(window.get("saved_usd") or 0.0), 8),
    }
