"""The nightly report: one JSON, one self-contained HTML page, a terminal table and a history
folder, all formatting the regression gate's verdict (`evals.gate`).

Each output has its own module: the run's numbers in `evals.summary`, the per-area view
both renderings share in `evals.overview`, the table in `evals.terminal`, the page in
`evals.html_page` with its charts in `evals.figures`. This module writes the files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evals.html_page import render_html


def write_report(
    results: dict[str, Any],
    out_dir: Path,
    past: list[dict[str, Any]],
    thresholds: Mapping[str, Mapping[str, float]],
) -> None:
    """report.json, report.html, and this run's summary in history/ for the next run."""
    hist_dir = out_dir / "history"
    hist_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(results, indent=2, default=str))
    (out_dir / "report.html").write_text(render_html(results, past, thresholds))
    (hist_dir / f"{results['run_id']}.json").write_text(
        json.dumps(
            {
                "run_id": results["run_id"],
                "at": results["at"],
                "dataset": (results.get("dataset") or {}).get("name"),
                "summary": results["summary"],
            },
            indent=1,
        )
    )
