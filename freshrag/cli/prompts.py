"""`freshrag prompts`: the answer prompt versions and their labels (list), and production
moved to a candidate only on an evaluation that found it no worse (promote)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from freshrag.cli._base import cli
from retrieval.answer.prompts import (
    DEFAULT_LABEL,
    TEMPLATES,
    PromptError,
    PromptRegistry,
    move_label,
    select,
)


class Refused(click.ClickException):
    """The report does not let the candidate replace production: one line, exit 1."""

    exit_code = 1


class BadInput(click.ClickException):
    """An unknown prompt or a file that is not a report: one line, exit 2 (usage)."""

    exit_code = 2


templates_option = click.option(
    "--templates",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=TEMPLATES,
    show_default="the folder the service loads",
    help="The prompt templates folder (*.toml, one version each).",
)


@cli.group("prompts")
def prompts() -> None:
    """Versioned answer prompts: list the versions and labels, promote a candidate.

    A label (production, canary) is what a request for it gets; the service reads the
    labels from the template files when it starts.
    """


@prompts.command("list")
@templates_option
def list_command(templates: Path) -> None:
    """Every version with its labels and description."""
    for p in PromptRegistry.load(templates).prompts:
        click.echo(f"{p.ref:24} {','.join(p.labels) or '-':20} {p.description}")


@prompts.command("promote")
@click.argument("name")
@click.option(
    "--report",
    "report_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="report.json of a `freshrag eval --prompt NAME@LABEL` run, or its folder.",
)
@templates_option
def promote(name: str, report_path: Path, templates: Path) -> None:
    """Move NAME's production label to the candidate the report scored, if it did not regress.

    Refuses (exit 1) unless that run found no regression of the candidate against
    production on the gate's answer metrics, and the files still label as production the
    version it was compared with. The label moves in the template files (each rewritten
    whole, the new holder first); the service serves the candidate from its next start.
    Exit codes: 0 moved or already there, 1 refused, 2 an unknown prompt or not a report.
    """
    from evals.candidate import NotPromotable, check_promotion

    registry = PromptRegistry.load(templates)
    try:
        before = select(registry.prompts, name, DEFAULT_LABEL)
    except PromptError as exc:
        raise BadInput(f"{exc} (in {templates})") from exc
    report = _read_report(report_path)
    try:
        pair = check_promotion(report, name, registry.prompts, f"in {templates}")
    except NotPromotable as exc:
        raise Refused(str(exc)) from exc
    changed = move_label(name, pair.candidate, DEFAULT_LABEL, templates)
    candidate = pair.ref("candidate")
    if not changed:
        click.echo(f"{candidate} is already {DEFAULT_LABEL}: nothing changed")
        return
    reason = report["prompt_comparison"].get("reason", "")
    click.echo(
        f"{DEFAULT_LABEL}: {before.ref} -> {candidate} (run {report.get('run_id', '?')}: "
        f"{reason}); changed {', '.join(f.name for f in changed)}. "
        "The service serves it from its next start."
    )


def _read_report(path: Path) -> dict[str, Any]:
    """report.json, given as the file or the folder `freshrag eval --out` wrote it to."""
    file = path / "report.json" if path.is_dir() else path
    try:
        report = json.loads(file.read_text())
    except FileNotFoundError as exc:
        raise BadInput(f"no report.json in {path}") from exc
    except (OSError, ValueError) as exc:
        raise BadInput(f"{file} is not a readable report.json ({exc})") from exc
    if not isinstance(report, dict) or "run_id" not in report:
        raise BadInput(f"{file} is not a `freshrag eval` report.json")
    return report
