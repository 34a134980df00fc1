"""`freshrag eval`: the evaluation harness against the running service."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from freshrag.cli._base import (
    Unreachable,
    _client_logging,
    _local_keys,
    cli,
)
from freshrag.settings import Settings
from retrieval.answer.prompts import PromptError, Selection


@cli.command("eval")
@click.option(
    "--url", default=None, help="Service URL. Default: http://FRESHRAG_HOST:FRESHRAG_PORT."
)
@click.option("--api-key", default=None, help="Default: the first key of the 'default' tenant.")
@click.option(
    "--dataset",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="JSONL eval set. Default: the Django dev set (evals/datasets/django-dev-*.jsonl); "
    "the FAQ-headings regression set is evals/datasets/django-faq-*.jsonl.",
)
@click.option(
    "--heldout-faq/--no-heldout-faq",
    default=False,
    show_default=True,
    help="Also ask the Django FAQ questions, with the FAQ pages republished (Kafka, usual "
    "doc ids) without their question headings while scoring, restored afterwards. Bumps "
    "those pages' versions by 2: for an evaluation deployment.",
)
@click.option("--modes", default="hybrid,dense,sparse", show_default=True)
@click.option("--top-k", type=int, default=10, show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N questions.")
@click.option("--answers/--no-answers", default=True, show_default=True, help="Also score /answer.")
@click.option(
    "--each-provider/--no-each-provider",
    default=False,
    show_default=True,
    help="Also ask every provider of the answer chain alone (GET /providers), no fallback: "
    "answer metrics per provider. One more /answer per question per provider (paid APIs "
    "are billed for it).",
)
@click.option(
    "--probes", type=int, default=10, show_default=True, help="Freshness probe documents (0: skip)."
)
@click.option("--probe-timeout", type=float, default=30.0, show_default=True)
@click.option("--slo", type=float, default=5.0, show_default=True, help="Freshness SLO in seconds.")
@click.option(
    "--judge-url",
    default=None,
    help="OpenAI-compatible judge base URL (/v1): LLM-judged RAGAS metrics.",
)
@click.option("--judge-model", default=None, help="Judge model name.")
@click.option(
    "--judge-api-key",
    default=None,
    envvar="FRESHRAG_JUDGE_API_KEY",
    help="Judge key (env: FRESHRAG_JUDGE_API_KEY).",
)
@click.option("--replay", default=None, help="Release replay, e.g. 5.1.14:5.2.8 (Django versions).")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Default: DATA_DIR/eval."
)
@click.option(
    "--thresholds",
    type=click.Path(path_type=Path),
    default=None,
    help="Gate limits (TOML). Default: the packaged evals/thresholds.toml.",
)
@click.option(
    "--prompt",
    "candidate",
    default=None,
    metavar="NAME@LABEL|NAME@VERSION",
    callback=lambda _ctx, _param, value: _selection(value),
    help="Also answer every question with this prompt version (e.g. grounded-answer@canary), "
    "beside the production version over the same retrieved contexts: the report shows both "
    "and whether the candidate regresses on the gate's answer metrics (what `freshrag "
    "prompts promote` requires). One more /answer per question.",
)
@click.option(
    "--generation",
    type=click.Choice(["serving", "standby"]),
    default="serving",
    show_default=True,
    help="standby: score the generation `freshrag reindex` is preparing (its own model), "
    "to compare it with the serving one before the switch.",
)
def eval_command(
    judge_url,
    judge_model,
    judge_api_key,
    url,
    api_key,
    dataset,
    modes,
    top_k,
    limit,
    answers,
    each_provider,
    probes,
    probe_timeout,
    slo,
    replay,
    out,  # noqa: ANN001
    thresholds,
    heldout_faq,
    generation,
    candidate,
) -> None:
    """Score relevance and freshness against the running service; exit 1 on a regression.

    Prints a compact table (each headline number with its threshold and status, and the
    verdict) and writes report.json and report.html. Exit codes: 0 ok, 1 regression,
    2 a usage error (an unknown --prompt among them), 3 the service or the broker cannot
    be reached. A candidate prompt's verdict does not change the exit code: it is in the
    report, and `freshrag prompts promote` reads it.
    """
    from api.auth import key_for_tenant
    from evals.candidate import CandidateError
    from evals.client import ServiceUnreachable
    from evals.dataset import default_path
    from evals.gate import THRESHOLDS
    from evals.run import EvalConfig, run_eval
    from evals.terminal import terminal_table
    from ingest.publisher import BrokerUnreachable
    from ingest.sample import django_docs

    if candidate and not answers:
        raise click.UsageError("--prompt compares answers: it cannot go with --no-answers")
    settings = Settings()
    _client_logging()
    # A writable, lasting font cache: no "generated new fontManager" on every run.
    os.environ.setdefault("MPLCONFIGDIR", str(settings.data_dir / "cache" / "matplotlib"))
    url = url or f"http://{settings.host}:{settings.port}"
    if api_key is None:
        api_key = key_for_tenant(_local_keys(settings))
        if api_key is None:
            raise click.UsageError(
                "no API key: pass --api-key or create the keys file (make up does)"
            )
    replay_spec = None
    if replay:
        old_v, _, new_v = replay.partition(":")
        cache = settings.data_dir / "samples"
        replay_spec = (django_docs(old_v, cache), django_docs(new_v, cache), f"{old_v}->{new_v}")
    cfg = EvalConfig(
        url=url,
        api_key=api_key,
        bootstrap=settings.kafka_bootstrap_servers,
        topic=settings.topic,
        dataset=dataset or default_path(settings.sample_django_version),
        out_dir=out or settings.data_dir / "eval",
        modes=[m for m in modes.split(",") if m],
        top_k=top_k,
        limit=limit,
        answers=answers,
        each_provider=each_provider,
        probes=probes,
        probe_timeout_s=probe_timeout,
        slo_s=slo,
        replay=replay_spec,
        thresholds=thresholds or THRESHOLDS,
        judge=(judge_url, judge_model, judge_api_key) if judge_url and judge_model else None,
        embedding_model=settings.model,
        generation=generation,
        prompt=candidate,
    )
    try:
        if heldout_faq:
            from evals.heldout import run_eval_with_heldout_faq

            cache = settings.data_dir / "samples"
            docs = django_docs(settings.sample_django_version, cache)
            results, code = run_eval_with_heldout_faq(cfg, docs, settings.sample_django_version)
        else:
            results, code = run_eval(cfg)
    except (ServiceUnreachable, BrokerUnreachable) as exc:
        raise Unreachable(str(exc)) from exc
    except CandidateError as exc:
        raise BadPrompt(str(exc)) from exc
    click.echo(terminal_table(results, cfg.out_dir / "report.html"))
    sys.exit(code)


class BadPrompt(click.ClickException):
    """A --prompt the service does not serve (or production itself): one line, exit 2."""

    exit_code = 2


def _selection(value: str | None) -> Selection | None:
    """`--prompt`'s NAME@LABEL or NAME@VERSION, or a usage error naming what is wrong."""
    if value is None:
        return None
    try:
        return Selection.parse(value)
    except PromptError as exc:
        raise click.BadParameter(str(exc), param_hint="--prompt") from exc
