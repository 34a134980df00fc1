"""Numbers the way an owner reads them, shared by the terminal table and the HTML page so that
both say the same thing the same way."""

from __future__ import annotations

import math
from typing import Any

# Counts shown whole, by metric name (the part after the area).
_COUNTS = (
    "documents",
    "chunks",
    "dead_letters",
    "backlog",
    "deleted_returned",
    "missed",
    "answer_timeouts",
    "provider_failures",
    "answered",
    "provider_calls",
    "unpriced_calls",
    "estimated_calls",
    "cache_hits",
    "cache_saved_tokens",
    "input_tokens",
    "output_tokens",
)


def fmt(metric: str, value: Any) -> str:
    """A number the way an owner reads it: rates in %, seconds and ms with units, counts whole."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, int | float):
        return str(value)
    name = metric.rsplit(".", 1)[-1]
    if name.endswith("_usd"):  # fractions of a cent matter per question
        return f"${value:,.2f}" if value >= 10 else f"${value:.6f}".rstrip("0").rstrip(".")
    if name.endswith("_ms"):
        return f"{value:.1f} ms" if value < 10 else f"{value:,.0f} ms"
    if name.endswith("_s") or name.endswith("seconds"):
        return f"{value:.2f} s" if value < 100 else f"{value:,.0f} s"
    if "rate" in name or "share" in name:
        return f"{value:.1%}"
    if name in _COUNTS:
        return f"{value:,.0f}"
    if name.startswith(("docs_", "chunks_", "probes")):
        return f"{value:,.0f}"
    return f"{value:.3f}"


def rule_text(metric: str, rule: str, limit: float) -> str:
    """A threshold as a reader checks it: `≥ 30.0%`, `≤ 0`, `drop ≤ 0.030`."""
    if rule == "min":
        return f"≥ {fmt(metric, limit)}"
    if rule == "max":
        return f"≤ {fmt(metric, limit)}"
    return f"drop ≤ {fmt(metric, limit)}"
