"""`freshrag eval`: relevance, answers, freshness and (optionally) a release replay → report + gate."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evals.candidate import judge_candidate, resolve_pair, run_with_candidate
from evals.client import ServiceClient
from evals.dataset import load
from evals.freshness import run_freshness
from evals.gate import baseline, latency_jumps, load_thresholds, verdict
from evals.metrics import answerable, refusal_scores
from evals.relevance import run_answers, run_each_provider, run_relevance
from evals.replay import run_replay
from evals.report import write_report
from evals.state import index_state, state_notes
from evals.summary import history, skipped_areas, summarize
from evals.usage import run_usage
from ingest.publisher import check_broker
from retrieval.answer.prompts import Selection


@dataclass
class EvalConfig:
    url: str
    api_key: str
    bootstrap: str
    topic: str
    dataset: Path
    out_dir: Path
    modes: list[str] = field(default_factory=lambda: ["hybrid", "dense", "sparse"])
    top_k: int = 10
    limit: int | None = None
    answers: bool = True
    each_provider: bool = False  # also every provider of the chain alone
    probes: int = 10
    probe_timeout_s: float = 30.0
    slo_s: float = 5.0
    replay: tuple[Path, Path, str] | None = None
    thresholds: Path | None = None
    judge: tuple[str, str, str | None] | None = None  # (base_url, model, api_key)
    embedding_model: str = "all-MiniLM-L6-v2"
    tenant: str = "default"
    acl: list[str] = field(default_factory=lambda: ["public"])
    progress: bool = True
    generation: str = "serving"  # or "standby": the generation `freshrag reindex` builds
    # A candidate prompt (NAME@LABEL or NAME@VERSION) answered beside production.
    prompt: Selection | None = None


def run_eval(cfg: EvalConfig) -> tuple[dict[str, Any], int]:
    """Run every part that was asked for, then `finish`.

    Fails fast, in one line (ServiceUnreachable / BrokerUnreachable), when the API is not
    ready or, for the parts that publish events, the broker cannot be reached; and with
    CandidateError when `cfg.prompt` names nothing the service serves.
    """
    client = ServiceClient(
        cfg.url, cfg.api_key, cfg.bootstrap, cfg.topic, generation=cfg.generation
    )
    try:
        client.check_ready()
        if cfg.probes or cfg.replay:
            check_broker(cfg.bootstrap)
        pair = resolve_pair(client, cfg.prompt) if cfg.prompt and cfg.answers else None
        items = load(cfg.dataset, with_unanswerable=True)
        items = items[: cfg.limit] if cfg.limit else items
        ranked = answerable(items)  # unanswerable questions have no gold to rank
        run_id = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        results: dict[str, Any] = {
            "run_id": run_id,
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "service": cfg.url,
            "dataset": {
                "name": cfg.dataset.name,
                "questions": len(items),
                "unanswerable": len(items) - len(ranked),
            },
            "skipped": {},
            "notes": [],
        }
        skipped = results["skipped"]
        if ranked and cfg.modes:
            results["relevance"] = run_relevance(client, ranked, cfg.modes, cfg.top_k, cfg.progress)
        else:
            skipped["relevance"] = "--modes is empty"
        if items and cfg.answers:
            answers_started = datetime.now(UTC)
            if pair:
                both = run_with_candidate(client, items, pair, cfg.progress)
                results["answers"] = both[0] if both else None
                if both:
                    results["prompt_comparison"] = both[1]
            else:
                results["answers"] = run_answers(client, items, cfg.progress)
            if results["answers"] is None:
                skipped["answers"] = "the service has no /answer"
                skipped["usage"] = "the service has no /answer"
            else:
                usage = run_usage(
                    client, answers_started, datetime.now(UTC), results["answers"]["rows"]
                )
                if isinstance(usage, str):
                    skipped["usage"] = usage
                else:
                    results["usage"] = usage
                results["answers"].update(refusal_scores(items, results["answers"]["rows"]))
                if results["answers"].get("note"):
                    results["notes"].append(results["answers"]["note"])
                if cfg.each_provider:
                    results["answers"]["alone"] = run_each_provider(client, items, cfg.progress)
            if cfg.judge and results["answers"]:
                from evals.judge import judged_scores
                from retrieval.encoders import resolve_model_path

                url, model, key = cfg.judge
                results["judge"] = judged_scores(
                    results["answers"]["rows"],
                    url,
                    model,
                    key,
                    resolve_model_path(cfg.embedding_model),
                )
        elif not cfg.answers:
            skipped["answers"] = skipped["usage"] = "--no-answers"
        if cfg.prompt and "prompt_comparison" not in results:
            results["notes"].append(f"--prompt {cfg.prompt}: not compared, the answers did not run")
        if not cfg.judge:
            skipped["judge"] = "no --judge-url/--judge-model"
        if cfg.probes:
            results["freshness"] = run_freshness(
                client,
                cfg.probes,
                cfg.probe_timeout_s,
                cfg.slo_s,
                cfg.tenant,
                cfg.acl,
                cfg.progress,
            )
        else:
            skipped["freshness"] = "--probes 0"
        if cfg.replay:
            old, new, label = cfg.replay
            results["replay"] = run_replay(
                client, old, new, label, tenant=cfg.tenant, progress=cfg.progress
            )
        else:
            skipped["replay"] = "no --replay"
        results["index"] = index_state(client)
        results["notes"] += state_notes(results["index"])
    finally:
        client.close()
    return finish(results, cfg.out_dir, cfg.thresholds)


def finish(
    results: dict[str, Any], out_dir: Path, thresholds: Path | None
) -> tuple[dict[str, Any], int]:
    """Summary, comparison with the previous run, the gate's verdict, and the files."""
    past = history(out_dir / "history")
    limits = load_thresholds(thresholds)
    results["summary"] = summarize(results)
    prev = baseline(past, (results.get("dataset") or {}).get("name"))
    prev_summary = prev["summary"] if prev else None
    results["previous"] = {"run_id": prev["run_id"], "summary": prev_summary} if prev else None
    results["skipped_areas"] = skipped_areas(results)
    decided = verdict(results["summary"], prev_summary, limits, results["skipped_areas"])
    results["checks"] = [c.as_dict() for c in decided.checks]
    results["regressions"] = [c.as_regression() for c in decided.regressions]
    results["latency_jumps"] = latency_jumps(results["summary"], prev_summary)
    results.setdefault("notes", [])
    if results.get("prompt_comparison"):
        judge_candidate(results["prompt_comparison"], limits)
        results["notes"] += _left_out(results["prompt_comparison"])
    write_report(results, out_dir, past, limits)
    return results, decided.exit_code


def _left_out(comparison: dict[str, Any]) -> list[str]:
    """A note when the candidate's comparison could not cover every question."""
    left = comparison["not_compared"]
    if not left:
        return []
    more = "…" if len(left) > 1 else ""
    return [
        f"--prompt {comparison['selection']}: {len(left)} of {comparison['questions']} "
        f"questions left out of the comparison ({left[0]['why']}{more})"
    ]
