"""The regression gate: each threshold of `thresholds.toml` applied to a run's summary (and to
the previous run's, for drops), the verdict and the exit code.

Pure functions over numbers, kept apart from the report so that what fails a nightly run
is decided in one place and every output only formats it. A part of the evaluation that
did not run (`--probes 0`, `--no-answers`, a mode left out) is "skipped", never a
regression.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from evals.summary import area_of

THRESHOLDS = Path(__file__).with_name("thresholds.toml")
# A p50 that grows by more than this factor between two runs is marked in the report.
LATENCY_JUMP = 2.0

Thresholds = Mapping[str, Mapping[str, float]]
Status = Literal["pass", "fail", "skipped", "n/a"]


def load_thresholds(path: Path | None) -> dict[str, dict[str, float]]:
    """`[min]`, `[max]` and `[max_drop]` tables; none at all when the file is absent."""
    if path is None or not path.exists():
        return {}
    return tomllib.loads(path.read_text())


@dataclass(frozen=True)
class Check:
    """One threshold applied to one run; `as_dict` is its form in report.json."""

    metric: str
    value: Any
    rule: str  # min, max or max_drop
    limit: float
    status: Status
    reason: str | None = None  # why skipped, missing or n/a
    previous: float | None = None  # the value a drop was measured from

    def as_dict(self) -> dict[str, Any]:
        out = {
            "metric": self.metric,
            "value": self.value,
            "rule": self.rule,
            "limit": self.limit,
            "status": self.status,
        }
        if self.reason is not None:
            out["reason"] = self.reason
        if self.previous is not None:
            out["previous"] = self.previous
        return out

    def as_regression(self) -> dict[str, Any]:
        """A failed check as report.json lists it: a missing metric has the rule "missing"."""
        out = {k: v for k, v in self.as_dict().items() if k not in ("status", "reason")}
        return out | {"rule": "missing" if self.reason == "missing" else self.rule}

    @classmethod
    def from_dict(cls, check: Mapping[str, Any]) -> Check:
        return cls(**{k: v for k, v in check.items() if k in cls.__dataclass_fields__})


def evaluate(
    summary: Mapping[str, float],
    previous: Mapping[str, float] | None,
    thresholds: Thresholds,
    skipped: Mapping[str, str] | None = None,
) -> list[Check]:
    """Every threshold applied to this run: status pass, fail, skipped or n/a.

    A metric whose area did not run is skipped. A metric missing from an area that ran
    fails ("missing"): the service stopped reporting it. A drop needs a previous value.
    """
    skipped = skipped or {}
    out: list[Check] = []

    def add(metric: str, rule: str, limit: float, status: Status, **extra: Any) -> None:
        out.append(Check(metric, summary.get(metric), rule, limit, status, **extra))

    for rule in ("min", "max"):
        for metric, limit in thresholds.get(rule, {}).items():
            if area_of(metric) in skipped:
                add(metric, rule, limit, "skipped", reason=skipped[area_of(metric)])
            elif metric not in summary:
                add(metric, rule, limit, "fail", reason="missing")
            else:
                bad = summary[metric] < limit if rule == "min" else summary[metric] > limit
                add(metric, rule, limit, "fail" if bad else "pass")
    for metric, drop in thresholds.get("max_drop", {}).items():
        prev = (previous or {}).get(metric)
        if area_of(metric) in skipped:
            add(metric, "max_drop", drop, "skipped", reason=skipped[area_of(metric)])
        elif metric not in summary:
            add(metric, "max_drop", drop, "fail", reason="missing")
        elif prev is None:
            add(metric, "max_drop", drop, "n/a", reason="no previous value")
        else:
            bad = prev - summary[metric] > drop
            add(metric, "max_drop", drop, "fail" if bad else "pass", previous=prev)
    return out


def checks(
    summary: Mapping[str, float],
    previous: Mapping[str, float] | None,
    thresholds: Thresholds,
    skipped: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """`evaluate` in report.json's form."""
    return [c.as_dict() for c in evaluate(summary, previous, thresholds, skipped)]


def gate(
    summary: Mapping[str, float],
    previous: Mapping[str, float] | None,
    thresholds: Thresholds,
    skipped: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """The regressions: checks that failed. Skipped parts never count."""
    return [
        c.as_regression()
        for c in evaluate(summary, previous, thresholds, skipped)
        if c.status == "fail"
    ]


def latency_jumps(
    summary: Mapping[str, float], previous: Mapping[str, float] | None, factor: float = LATENCY_JUMP
) -> list[dict[str, Any]]:
    """p50 latencies that grew more than `factor`× since the previous run (a mark, not a gate)."""
    out = []
    for metric, value in summary.items():
        if not metric.endswith("latency_p50_ms"):
            continue
        prev = (previous or {}).get(metric)
        if prev and value and value / prev > factor:
            out.append({"metric": metric, "value": value, "previous": prev, "ratio": value / prev})
    return out


def baseline(past: list[dict[str, Any]], dataset: str | None) -> dict[str, Any] | None:
    """The run this one is compared with: the latest on the same dataset (like with like)."""
    same = [r for r in past if r.get("dataset") in (None, dataset)] if dataset else past
    return same[-1] if same else None


@dataclass(frozen=True)
class Verdict:
    """What the gate decided about a run: every check, and the exit code that follows."""

    checks: tuple[Check, ...]

    @property
    def regressions(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def exit_code(self) -> int:
        """0: no regression; 1: at least one (what `freshrag eval` exits with)."""
        return 1 if self.regressions else 0

    def count(self, status: Status) -> int:
        return sum(c.status == status for c in self.checks)

    @classmethod
    def of(cls, results: Mapping[str, Any]) -> Verdict:
        """The verdict stored in a run's results (report.json's `checks`)."""
        return cls(tuple(Check.from_dict(c) for c in results.get("checks", [])))


def verdict(
    summary: Mapping[str, float],
    previous: Mapping[str, float] | None,
    thresholds: Thresholds,
    skipped: Mapping[str, str] | None = None,
) -> Verdict:
    return Verdict(tuple(evaluate(summary, previous, thresholds, skipped)))


# --- a candidate prompt against production, in one run --------------------------------------

CandidateStatus = Literal["pass", "regression", "inconclusive"]


def answer_limits(thresholds: Thresholds) -> dict[str, dict[str, float]]:
    """The thresholds on answer metrics (`answers.*`): what a candidate prompt is gated on."""
    return {
        rule: {m: limit for m, limit in table.items() if area_of(m) == "answers"}
        for rule, table in thresholds.items()
    }


def candidate_checks(
    candidate: Mapping[str, float], production: Mapping[str, float], thresholds: Thresholds
) -> list[Check]:
    """The gate's answer thresholds applied to a candidate prompt's answers.

    Production's answers to the same questions in the same run stand in for the previous
    run: a `max_drop` is a fall from production, `min` and `max` hold as for any run. A
    metric that neither prompt has (no unanswerable question in the set) is n/a, not missing.
    """
    out = []
    for c in evaluate(candidate, production, answer_limits(thresholds)):
        if c.reason == "missing" and c.metric not in production:
            c = replace(c, status="n/a", reason="measured for neither prompt")
        out.append(c)
    return out


def candidate_verdict(checks: list[Check], compared: int) -> tuple[CandidateStatus, str]:
    """Whether a candidate prompt may replace production, and why in one line.

    "pass" needs evidence: at least one question both prompts answered over the same
    contexts, and at least one answer threshold that held; a failed one is a regression.
    """
    failed = [c.metric for c in checks if c.status == "fail"]
    if failed:
        return "regression", "regresses against production on " + ", ".join(failed)
    if compared == 0:
        return "inconclusive", "no question was answered by both prompts over the same contexts"
    passed = sum(c.status == "pass" for c in checks)
    if not passed:
        return "inconclusive", "the thresholds gate no answer metric this run measured"
    return "pass", f"no regression against production ({passed} answer checks passed)"
