"""The compact table `freshrag eval` prints: each headline number with its threshold, the
previous value and a status, then the gate's verdict. What a cron mail needs, no more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.gate import Verdict
from evals.overview import ALONE_COLUMNS, overview, prompt_comparison, providers_alone


def terminal_table(results: dict[str, Any], report_path: Path | None = None) -> str:
    """`results` as `finish` leaves them; `report_path` closes the table when given."""
    prev = results.get("previous")
    lines = [
        f"FreshRAG eval {results['run_id']} against {results.get('service', '?')}: "
        f"{results.get('dataset', {}).get('questions', 0)} questions"
        + (f", compared with {prev['run_id']}" if prev else ", first run")
    ]
    head = f"{'':10} {'':26} {'value':>10}  {'threshold':<22} {'previous':>10}  status"
    lines += [head, "-" * len(head)]
    for a in overview(results):
        if a["skipped"]:
            lines.append(f"{a['area']:10} skipped ({a['skipped']})")
            continue
        if a["partly_skipped"]:
            lines.append(f"{'':10} skipped: {a['partly_skipped']}")
        if a["area"] == "index":
            st = results.get("index") or {}
            parts = [f"{r['label']} {r['value']}" for r in a["rows"]]
            parts.append(f"last indexed {st.get('last_indexed_at') or 'n/a'}")
            if st.get("ready") is False:
                parts.append("NOT READY")
            lines.append(f"{'index':10} " + ", ".join(parts))
            continue
        for n, r in enumerate(x for x in a["rows"] if x["brief"]):
            status = {"info": "", "n/a": "n/a", "fail": "FAIL", "warn": "WARN"}.get(
                r["status"], r["status"]
            )
            lines.append(
                f"{a['area'] if n == 0 else '':10} {r['label'][:26]:26} {r['value']:>10}  "
                f"{r['threshold'][:22]:<22} {r['previous']:>10}  {status}"
                + (f" ({r['note'].split(' (')[0]})" if r["note"] else "")
            )
    for row in providers_alone(results):
        cells = ", ".join(f"{label} {row[col]}" for col, label in ALONE_COLUMNS)
        lines.append(f"{'answers':10} {row['provider']} alone: {cells}")
    lines += comparison_lines(results, report_path)
    for note in results.get("notes", []):
        lines.append(f"note: {note}")
    lines.append(verdict_line(Verdict.of(results)))
    if report_path:
        lines.append(f"report: {report_path}")
    return "\n".join(lines)


def verdict_line(verdict: Verdict) -> str:
    """The gate's decision in one line: the regressed metrics, or OK, and the tally."""
    tally = f"{verdict.count('pass')} passed, {verdict.count('skipped')} skipped"
    if verdict.regressions:
        names = ", ".join(c.metric for c in verdict.regressions)
        return f"verdict: REGRESSION: {names} ({tally})"
    return f"verdict: OK, no regression ({tally})"


def comparison_lines(results: dict[str, Any], report_path: Path | None = None) -> list[str]:
    """The candidate prompt's answer metrics beside production's, its own verdict and, when
    it passed, the command that promotes it."""
    view = prompt_comparison(results)
    if view is None:
        return []
    lines = [
        f"{'prompt':10} {view['candidate']} ({view['selection']}) beside production "
        f"{view['production']}: {view['compared']} of {view['questions']} questions over the "
        "same contexts",
        f"{'':10} {'':26} {'candidate':>10}  {'threshold':<22} {'production':>10}  status",
    ]
    for r in view["rows"]:
        status = {"info": "", "n/a": "n/a", "fail": "FAIL"}.get(r["status"], r["status"])
        lines.append(
            f"{'':10} {r['label'][:26]:26} {r['candidate']:>10}  {r['threshold'][:22]:<22} "
            f"{r['production']:>10}  {status}"
        )
    word = {"pass": "OK", "regression": "REGRESSION", "inconclusive": "INCONCLUSIVE"}
    lines.append(
        f"candidate {view['candidate']}: {word.get(view['verdict'], view['verdict'])}, "
        f"{view['reason']}"
    )
    if view["verdict"] == "pass" and report_path:
        lines.append(
            f"promote it with: freshrag prompts promote {view['name']} "
            f"--report {report_path.with_name('report.json')}"
        )
    return lines
