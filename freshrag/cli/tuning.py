"""`freshrag tune`: adapt the serving embedding model to the indexed corpus, and with
`--adopt` run the whole loop: tune → reindex onto it → compare with serving → switch only
when the gate passes (otherwise drop the standby). An experiment: docs/how-to/tune.md
says what it gained where it was measured.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from freshrag.cli._base import _admin_api, _client_logging, _local_keys, cli, tqdm
from freshrag.settings import Settings


@cli.command()
@click.option("--tenant", default=None, help="Learn from this tenant's chunks (default: all).")
@click.option("--steps", type=int, default=None, help="Training steps (FRESHRAG_TUNE_STEPS).")
@click.option(
    "--max-seconds", type=float, default=None, help="Time budget (FRESHRAG_TUNE_MAX_SECONDS)."
)
@click.option("--cancel", is_flag=True, help="Stop the running tune; nothing of it is kept.")
@click.option(
    "--adopt",
    is_flag=True,
    help="Then reindex onto the tuned model, score both generations on --dataset and switch "
    "only if the standby gains --min-gain MRR@10 (hybrid) and no mode loses over 0.01; "
    "otherwise drop the standby. Exit 1 when it was not adopted.",
)
@click.option(
    "--dataset",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Questions for the --adopt comparison (JSONL, as `freshrag eval`). Default: the "
    "Django dev set, which fits the sample corpus only.",
)
@click.option("--min-gain", type=float, default=0.03, show_default=True)
@click.option("--url", default=None, help="The service (default: FRESHRAG_HOST:FRESHRAG_PORT).")
@click.option("--api-key", default=None, help="An admin key (default: the dev key file's).")
def tune(tenant, steps, max_seconds, cancel, adopt, dataset, min_gain, url, api_key) -> None:  # noqa: ANN001
    """Train a corpus-adapted copy of the serving embedding model (experimental).

    Pairs are mined from the indexed chunks' own structure (a sentence and the passage it
    came from, a heading and its section, neighbouring passages); the training runs in a
    niced process of the service, bounded by steps and time. The result is a model folder
    under the data dir with a card; the serving model is untouched until `freshrag reindex
    --model <folder>` and a switch (or --adopt) move to it.
    """
    _client_logging()
    call = _admin_api(url, api_key)
    if cancel:
        _echo(call("DELETE", "/admin/tune"))
        return
    body = {k: v for k, v in (("tenant", tenant), ("steps", steps)) if v is not None}
    if max_seconds is not None:
        body["max_seconds"] = max_seconds
    state = _follow(call, call("POST", "/admin/tune", json=body))
    _echo(state)
    if state["state"] != "done":
        raise click.ClickException(f"the tune ended {state['state']}: {state.get('error', '')}")
    if not adopt:
        click.echo(
            f"next: freshrag reindex --model {state['model']}; freshrag eval --generation "
            "standby; then freshrag reindex --switch (or run freshrag tune --adopt)"
        )
        return
    _adopt(call, state["model"], dataset, min_gain, url, api_key)


def _follow(call, state: dict) -> dict:  # noqa: ANN001
    """A bar over the training steps until the tune ends."""
    click.echo(
        f"tuning on {state['pairs']} pairs from {state['scope']} ({state['documents']} "
        f"documents, {state['chunks']} chunks): {state['kinds']}"
    )
    with tqdm(total=state["steps"], desc="training", unit="step") as bar:
        while state["state"] in ("training", "saving"):
            time.sleep(2)
            state = call("GET", "/admin/tune")
            bar.n = state.get("step", 0)
            # "held": stopped while the service answers queries or indexes edits.
            shown = "held" if state.get("paused") else state["state"]
            bar.set_postfix(seconds=round(state.get("seconds") or 0), state=shown)
            bar.refresh()
    return state


def _echo(state: dict) -> None:
    line = f"tune {state.get('name', '-')}: {state['state']}"
    if state.get("step") is not None and state.get("steps"):
        line += f", step {state['step']}/{state['steps']}"
    if state.get("seconds"):
        line += f", {state['seconds']:.0f} s"
    if state.get("paused_s"):
        held = "held now" if state.get("paused") else "held"
        line += f" ({held} {state['paused_s']:.0f} s while the service worked)"
    click.echo(line)
    if state.get("model"):
        click.echo(f"model: {state['model']}")


def _adopt(call, model: str, dataset: Path | None, min_gain: float, url, api_key) -> None:  # noqa: ANN001
    """Reindex onto `model`, score serving and standby alike, switch or drop."""
    from api.auth import key_for_tenant
    from evals.client import ServiceClient
    from evals.dataset import default_path, load
    from evals.model_gate import model_gate
    from evals.relevance import run_relevance
    from freshrag.cli.index import _echo_generations, _follow_copy

    settings = Settings()

    def generations(method: str, path: str, **kwargs) -> dict:  # noqa: ANN003
        return call(method, f"/admin/generations{path}", **kwargs)

    state = generations("POST", "", json={"model": model})
    _follow_copy(generations, state)
    items = [i for i in load(dataset or default_path(settings.sample_django_version))]
    items = [i for i in items if i.answerable]
    key = api_key or key_for_tenant(_local_keys(settings))
    if key is None:
        raise click.UsageError("no key of the default tenant to ask questions with")
    base = (url or f"http://{settings.host}:{settings.port}").rstrip("/")
    scores = {}
    for generation in ("serving", "standby"):
        client = ServiceClient(
            base, key, settings.kafka_bootstrap_servers, settings.topic, generation=generation
        )
        try:
            scores[generation] = run_relevance(client, items, ["hybrid", "dense"])["modes"]
        finally:
            client.close()
    verdict = model_gate(scores["serving"], scores["standby"], min_gain=min_gain)
    for line in verdict.lines:
        click.echo(line)
    if verdict.passed:
        _echo_generations(generations("POST", "/switch", json={"force": False}))
        click.echo("adopted: the tuned model serves (freshrag reindex --switch goes back)")
        return
    _echo_generations(generations("DELETE", "/standby"))
    click.echo("not adopted: the standby was dropped; the serving model is unchanged")
    raise SystemExit(1)
