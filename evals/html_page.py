"""The report as one self-contained HTML page (report.html): the area cards, the figures,
the questions and answers that failed, and every number next to the previous run's."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evals.figures import figures
from evals.formatting import fmt
from evals.overview import ALONE_COLUMNS, overview, prompt_comparison, providers_alone

TEMPLATES = Path(__file__).with_name("templates")


def worst_questions(results: dict[str, Any], limit: int = 10) -> list[dict[str, Any]]:
    """Per mode, the questions whose gold is not at rank 1 (missed first): failures only."""
    out = []
    for mode, questions in results.get("relevance", {}).get("questions", {}).items():
        failing = [q for q in questions if (q.get("ndcg@10") or 0.0) < 0.999]
        failing.sort(
            key=lambda q: (q.get("gold_rank") is not None, q.get("ndcg@10") or 0.0, q["id"])
        )
        out.append(
            {
                "mode": mode,
                "total": len(questions),
                "failing": len(failing),
                "rows": [
                    {
                        **q,
                        "retrieved": [
                            {"id": r, "gold": r in set(q.get("gold", []))}
                            for r in q.get("retrieved", [])
                        ],
                    }
                    for q in failing[:limit]
                ],
            }
        )
    return out


def answer_misses(results: dict[str, Any], limit: int = 10) -> dict[str, Any] | None:
    """The answers that refused or cited no gold document; None when answers did not run."""
    answers = results.get("answers")
    if not answers:
        return None
    rows = [r for r in answers.get("rows", []) if r.get("refused") or r.get("cites_gold") is False]
    return {"total": len(answers.get("rows", [])), "failing": len(rows), "rows": rows[:limit]}


def render_html(
    results: dict[str, Any],
    past: list[dict[str, Any]],
    thresholds: Mapping[str, Mapping[str, float]] | None = None,
) -> str:
    """The page for `results` as `finish` leaves them; `past` runs draw the trends."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html", "j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = lambda v, metric="": fmt(metric, v)
    figs = figures(results, past, thresholds)
    replay = results.get("replay")
    return env.get_template("report.html.j2").render(
        r=results,
        areas=overview(results),
        figures=figs,
        worst=worst_questions(results),
        answer_misses=answer_misses(results),
        alone=providers_alone(results),
        alone_columns=ALONE_COLUMNS,
        candidate=prompt_comparison(results),
        replay=(
            [(k, fmt(f"replay.{k}", v)) for k, v in replay.items() if k != "label"]
            if replay
            else None
        ),
        index=results.get("index") or {},
        all_numbers=[
            (
                k,
                fmt(k, v),
                fmt(k, ((results.get("previous") or {}).get("summary") or {}).get(k))
                if k in ((results.get("previous") or {}).get("summary") or {})
                else "",
            )
            for k, v in sorted(results["summary"].items())
        ],
    )
