"""A run's numbers as the gate and the report read them: one flat `area.metric` → number map,
the areas that did not run, and the past runs kept in the history folder."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MODES = ("hybrid", "dense", "sparse")
# Areas a run may leave out; their metrics are `area.name` (a mode is an area too).
OPTIONAL_AREAS = (
    "relevance",
    *MODES,
    "answers",
    "judge",
    "usage",
    "freshness",
    "replay",
    "index",
)


def _numbers(prefix: str, scores: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of `scores` (not booleans) as `prefix.key`."""
    return {
        f"{prefix}.{k}": v
        for k, v in scores.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def summarize(results: dict[str, Any]) -> dict[str, float]:
    """Flat `area.metric` → number: what the table, the trends and the gate read."""
    out: dict[str, float] = {}
    for mode, scores in results.get("relevance", {}).get("modes", {}).items():
        out.update(_numbers(mode, scores))
    if "relevance" in results:
        out["relevance.stale_hit_rate"] = results["relevance"]["stale_hit_rate"]
    for area in ("answers", "judge", "usage", "freshness", "replay", "index"):
        out.update(_numbers(area, results.get(area) or {}))
    answers = results.get("answers") or {}
    # Per provider (the one that answered; `none`: refused before any was asked).
    for provider, scores in (answers.get("by_provider") or {}).items():
        out.update(_numbers(f"answers.{provider}", scores))
    # Each provider asked alone (`freshrag eval --each-provider`).
    for provider, scores in (answers.get("alone") or {}).items():
        out.update(_numbers(f"answers.alone.{provider}", scores))
    return {k: v for k, v in out.items() if not (isinstance(v, float) and math.isnan(v))}


def area_of(metric: str) -> str:
    """`hybrid.ndcg@10` → `hybrid`: the part of the run a metric comes from."""
    return metric.split(".", 1)[0]


def skipped_areas(results: dict[str, Any]) -> dict[str, str]:
    """Area → why it did not run (`results["skipped"]`, set by the run, gives the reasons)."""
    given = results.get("skipped") or {}
    return {
        area: given.get(area) or ("mode not run" if area in MODES else "not run")
        for area in OPTIONAL_AREAS
        if not _area_ran(results, area)
    }


def _area_ran(results: dict[str, Any], area: str) -> bool:
    modes = results.get("relevance", {}).get("modes", {})
    if area == "relevance":
        return bool(modes)
    if area in MODES:
        return area in modes
    return bool(results.get(area))


def history(folder: Path) -> list[dict[str, Any]]:
    """The past runs' summaries, oldest first; a file that cannot be read is left out."""
    runs = []
    for f in sorted(folder.glob("*.json")):
        try:
            runs.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            continue
    return runs
