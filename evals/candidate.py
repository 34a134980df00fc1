"""A candidate prompt (`freshrag eval --prompt NAME@LABEL`) answered beside production, and
whether a report lets it replace production (`freshrag prompts promote`).

Same contexts: each question is put to both versions one right after the other, the
answer cache bypassed and the order alternating (neither always goes first), and
`/retrieve` with /answer's query, top_k, mode and grouping is read before and after the
pair. When both reads return the same sections (ids, versions and text), the index did not
change in between and both answers were built from those contexts: retrieval over an
unchanged index is deterministic, and the API lets a client choose the prompt, not pass
contexts. A question whose contexts changed, or whose answer came from the cache or from
another version than asked, is left out of the comparison and listed with the reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from evals.client import ANSWER_TOP_K, ServiceClient
from evals.dataset import EvalItem
from evals.gate import Thresholds, candidate_checks, candidate_verdict
from evals.metrics import refusal_scores
from evals.progress import bar
from evals.relevance import answer_row, score_answers
from evals.summary import summarize
from retrieval.answer.prompts import DEFAULT_LABEL, PromptError, Selection, Versioned, select

ANSWER_MODE = "hybrid"  # /answer's default mode: the contexts it answers from


class CandidateError(ValueError):
    """A `--prompt` that cannot be compared: unknown name, label or version on the service,
    or the production version itself."""


class NotPromotable(ValueError):
    """A report that does not show the candidate as good as production, or that no longer
    matches the prompt files."""


@dataclass(frozen=True, slots=True)
class _Served:
    """A GET /prompts entry: what `select` needs."""

    name: str
    version: int
    labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PromptPair:
    """The versions a run compares: the candidate as asked for, and production."""

    selection: str  # as the user wrote it, e.g. grounded-answer@canary
    name: str
    candidate: int
    production: int

    def ref(self, side: str) -> str:
        return f"{self.name}@{self.candidate if side == 'candidate' else self.production}"

    def body(self, side: str) -> dict[str, Any]:
        """/answer's prompt selection, by exact version: what is compared is what was resolved."""
        version = self.candidate if side == "candidate" else self.production
        return {"name": self.name, "version": version}


def pair_of(selection: Selection, prompts: Iterable[Versioned], where: str) -> PromptPair:
    """The candidate `selection` names and the production version of the same prompt."""
    prompts = list(prompts)
    try:
        candidate = select(prompts, selection.name, selection.label, selection.version)
        production = select(prompts, selection.name, DEFAULT_LABEL)
    except PromptError as exc:
        raise CandidateError(f"--prompt {selection}: {exc} ({where})") from exc
    if candidate.version == production.version:
        raise CandidateError(
            f"--prompt {selection} is {selection.name}@{candidate.version}, the production "
            "version itself: nothing to compare"
        )
    return PromptPair(str(selection), selection.name, candidate.version, production.version)


def resolve_pair(client: ServiceClient, selection: Selection) -> PromptPair:
    """`pair_of` over the versions the service serves (GET /prompts): fails before any scoring."""
    served = [_Served(p["name"], int(p["version"]), tuple(p["labels"])) for p in client.prompts()]
    if not served:
        raise CandidateError(f"--prompt {selection}: the service at {client.url} lists no prompts")
    return pair_of(selection, served, f"on the service at {client.url}")


def contexts_seen(client: ServiceClient, question: str) -> tuple[list[str], str]:
    """The sections /answer answers `question` from: their ids and a digest with their text."""
    hits, _ = client.retrieve(question, ANSWER_MODE, ANSWER_TOP_K)
    ids = [
        f"{h['doc_id']}@{h['version']}#" + ",".join(map(str, h.get("chunks") or [h["chunk_index"]]))
        for h in hits
    ]
    texts = json.dumps([[i, h.get("text", "")] for i, h in zip(ids, hits, strict=True)])
    return ids, hashlib.sha256(texts.encode()).hexdigest()[:16]


def _why_not_compared(
    before: str, after: str, rows: Mapping[str, dict[str, Any]], pair: PromptPair
) -> str | None:
    if before != after:
        return "the retrieved contexts changed between the two answers"
    for side, row in rows.items():
        if row["cached"]:
            return f"the {side} answer came from the answer cache"
        if row.get("prompt") not in (None, pair.ref(side)):
            return f"the {side} answer was written with {row['prompt']}, not {pair.ref(side)}"
    return None


def _outcome(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row[k] for k in ("refused", "cites_gold", "cited", "provider", "latency_ms")}


def run_with_candidate(
    client: ServiceClient, items: list[EvalItem], pair: PromptPair, progress: bool = True
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(production's answers as `run_answers` scores them, the comparison); None without /answer.

    Production's answers are the run's answers (the gate reads them as ever), so a run with
    a candidate asks each question twice, not three times.
    """
    rows: dict[str, list[dict[str, Any]]] = {"production": [], "candidate": []}
    pairs = []
    for n, item in enumerate(bar(items, progress=progress, desc="answers: two prompts", unit="q")):
        ids, before = contexts_seen(client, item.question)
        got: dict[str, dict[str, Any]] = {}
        for side in ("production", "candidate") if n % 2 == 0 else ("candidate", "production"):
            result = client.answer(item.question, prompt=pair.body(side))
            if result is None:
                return None
            got[side] = answer_row(item, result)
        _, after = contexts_seen(client, item.question)
        for side in rows:
            rows[side].append(got[side])
        why = _why_not_compared(before, after, got, pair)
        pairs.append(
            {
                "id": item.id,
                "question": item.question,
                "contexts": ids,
                "compared": why is None,
                **({"why": why} if why else {}),
                **{side: _outcome(got[side]) for side in rows},
            }
        )
    production = score_answers(rows["production"], client.cache_bypass)
    production["prompt"] = pair.ref("production")
    kept = [p["compared"] for p in pairs]  # by position: ids need not be unique
    scores = {
        side: _scores(
            items, [r for r, ok in zip(side_rows, kept, strict=True) if ok], client.cache_bypass
        )
        for side, side_rows in rows.items()
    }
    comparison = {
        "selection": pair.selection,
        "name": pair.name,
        "candidate": pair.ref("candidate"),
        "production": pair.ref("production"),
        "questions": len(items),
        "compared": sum(kept),
        "not_compared": [
            {"id": p["id"], "question": p["question"], "why": p["why"]}
            for p in pairs
            if not p["compared"]
        ],
        "production_scores": scores["production"],
        "candidate_scores": scores["candidate"],
        "pairs": pairs,
        "rows": rows["candidate"],
    }
    return production, comparison


def _scores(
    items: list[EvalItem], rows: list[dict[str, Any]], cache_bypass: bool | None
) -> dict[str, float]:
    """`rows` scored as a run's answers are: the same `answers.*` names the gate reads."""
    if not rows:
        return {}
    block = score_answers([dict(r) for r in rows], cache_bypass)
    block.update(refusal_scores(items, block["rows"]))
    return summarize({"answers": block})


def judge_candidate(comparison: dict[str, Any], thresholds: Thresholds) -> None:
    """The gate's answer thresholds on the candidate against production: `checks`,
    `verdict` (pass, regression, inconclusive) and `reason`, added to `comparison`."""
    checks = candidate_checks(
        comparison["candidate_scores"], comparison["production_scores"], thresholds
    )
    status, reason = candidate_verdict(checks, comparison["compared"])
    comparison["checks"] = [c.as_dict() for c in checks]
    comparison["verdict"], comparison["reason"] = status, reason


def check_promotion(
    report: Mapping[str, Any], name: str, prompts: Iterable[Versioned], where: str
) -> PromptPair:
    """The pair `report` lets `freshrag prompts promote` move production to, or NotPromotable.

    The report must compare a candidate of `name` with production and find no regression,
    and the prompt files (`prompts`, read from `where`) must still hold what it compared:
    production on the version it compared against, the candidate's version present.
    """
    comparison = report.get("prompt_comparison")
    run = report.get("run_id", "?")
    if not comparison:
        raise NotPromotable(
            f"run {run} scored no candidate prompt: run `freshrag eval --prompt {name}@canary` first"
        )
    if comparison.get("name") != name:
        raise NotPromotable(
            f"run {run} compared a candidate of '{comparison.get('name')}', not of '{name}'"
        )
    candidate = comparison["candidate"]
    if comparison.get("verdict") != "pass":
        why = comparison.get("reason") or "was not judged"
        if comparison.get("verdict") != "regression":
            why = f"was inconclusive: {why}"
        raise NotPromotable(f"{candidate} is not promoted: in run {run} it {why}")
    pair = PromptPair(
        comparison["selection"],
        name,
        int(candidate.rsplit("@", 1)[1]),
        int(comparison["production"].rsplit("@", 1)[1]),
    )
    prompts = list(prompts)
    try:
        select(prompts, name, version=pair.candidate)
        current = select(prompts, name, DEFAULT_LABEL)
    except PromptError as exc:
        raise NotPromotable(f"{exc} ({where})") from exc
    if current.version not in (pair.production, pair.candidate):  # candidate: nothing to move
        raise NotPromotable(
            f"run {run} compared {candidate} with {pair.ref('production')}, but {DEFAULT_LABEL} "
            f"is now {name}@{current.version} ({where}): evaluate it again"
        )
    return pair
