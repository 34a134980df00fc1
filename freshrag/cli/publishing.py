"""Send documents: `publish` (files, folders, deletes) and `sync` (a folder, kept indexed)."""

from __future__ import annotations

import threading
from pathlib import Path

import click

from freshrag.cli._base import (
    Unreachable,
    _client_logging,
    _echo_event,
    _publisher,
    _stop_on_signals,
    cli,
)
from freshrag.settings import Settings

BACKFILL_HELP = (
    "Send to the backfill topic (FRESHRAG_BACKFILL_TOPIC): for bulk loads, which workers "
    "index only when no live event waits, so live edits are not delayed behind them."
)


def _publisher_to(settings: Settings, backfill: bool):  # noqa: ANN202
    """A publisher for the live topic, or with --backfill the backfill topic."""
    publisher = _publisher(settings)
    if backfill:
        publisher.topic = settings.backfill_topic
    return publisher


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--delete", is_flag=True, help="Publish delete events instead of upserts.")
@click.option(
    "--doc-id",
    "doc_ids",
    multiple=True,
    help="With --delete: a document id to delete (repeatable); no file needed.",
)
@click.option("--tenant", default="default", show_default=True)
@click.option("--acl", multiple=True, help="Group allowed to read (repeatable). Default: public.")
@click.option(
    "--version",
    "version",
    type=int,
    default=None,
    help="Document version. Default: milliseconds since the epoch.",
)
@click.option("--mime", default=None, help="Override the type guessed from the file name.")
@click.option(
    "--prefix", default="", help="Prefix for doc ids (ids are paths relative to each folder)."
)
@click.option("--backfill", is_flag=True, help=BACKFILL_HELP)
def publish(
    paths: tuple[Path, ...],
    delete: bool,
    doc_ids: tuple[str, ...],
    tenant: str,
    acl: tuple[str, ...],
    version: int | None,
    mime: str | None,
    prefix: str,
    backfill: bool,
) -> None:
    """Publish files or folders as document events; or delete documents by id.

    With --delete a path need not exist any more (its doc id is derived from the name
    as for an upsert); --doc-id takes the id verbatim.
    """
    from ingest.publisher import BrokerUnreachable, build_events, delete_events

    if doc_ids and not delete:
        raise click.UsageError("--doc-id deletes documents: add --delete")
    if not paths and not doc_ids:
        raise click.UsageError("give PATH... to publish, or --delete --doc-id ID")
    for p in paths:
        if not delete and not p.exists():
            raise click.BadParameter(f"no such file or folder: {p}", param_hint="PATHS")
    settings = Settings()
    _client_logging()
    events = build_events(
        paths,
        op="delete" if delete else "upsert",
        tenant=tenant,
        acl=list(acl) or None,
        version=version,
        mime=mime,
        prefix=prefix,
    ) + delete_events(doc_ids, tenant=tenant, version=version)
    publisher = _publisher_to(settings, backfill)
    try:
        sent = publisher.publish(events)
    except BrokerUnreachable as exc:
        raise Unreachable(str(exc)) from exc
    finally:
        publisher.close()
    for e in events:
        _echo_event(e)
    click.echo(f"sent {sent} event(s) to {publisher.topic} on {settings.kafka_bootstrap_servers}")


@cli.command()
@click.argument(
    "folder", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="DIR"
)
@click.option(
    "--watch", is_flag=True, help="Keep going: sync again every --interval, until Ctrl-C."
)
@click.option(
    "--interval", type=float, default=10.0, show_default=True, help="Seconds between passes."
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="With --watch: a file changed less than this many seconds ago waits for a later "
    "pass, so one still being written is not sent half-done (and then again).",
)
@click.option("--prefix", default="", help="Prefix for doc ids (ids are paths relative to DIR).")
@click.option("--tenant", default="default", show_default=True)
@click.option("--acl", multiple=True, help="Group allowed to read (repeatable). Default: public.")
@click.option("--mime", default=None, help="Override the type guessed from each file name.")
@click.option("--backfill", is_flag=True, help=BACKFILL_HELP)
@click.option(
    "--manifest",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="What was sent (hashes). Default: DATA_DIR/sync/<folder>-<hash>.json.",
)
def sync(
    folder: Path,
    watch: bool,
    interval: float,
    settle: float,
    prefix: str,
    tenant: str,
    acl: tuple[str, ...],
    mime: str | None,
    backfill: bool,
    manifest: Path | None,
) -> None:
    """Keep DIR (a folder or a git checkout) in the index.

    Publishes new and changed files only (by content hash) and delete events for files
    that disappeared. What was sent is recorded only once the broker confirmed it, so an
    interrupted or failed pass is redone by the next one. In a git checkout, files git
    ignores are left out; hidden files always are, and so are types FreshRAG cannot parse.
    The record is the same whichever lane a pass used: an initial --backfill load and a
    later live --watch share it.
    """
    from ingest.publisher import BrokerUnreachable
    from ingest.sync import Syncer, manifest_path

    settings = Settings()
    _client_logging()
    manifest = manifest or manifest_path(settings.data_dir, folder, settings.topic, tenant, prefix)
    stop = _stop_on_signals(quiet=True) if watch else threading.Event()
    publisher = None
    try:
        while True:
            try:
                publisher = publisher or _publisher_to(settings, backfill)
                result = Syncer(
                    folder,
                    publisher,
                    manifest,
                    tenant=tenant,
                    acl=list(acl) or None,
                    prefix=prefix,
                    mime=mime,
                    max_bytes=settings.max_document_bytes,
                    settle_s=settle if watch else 0.0,
                ).run_once()
            except (Unreachable, BrokerUnreachable) as exc:
                if not watch:
                    raise Unreachable(str(exc)) from exc
                click.echo(f"error: {exc} (retrying in {interval:g} s)", err=True)
                if publisher:
                    publisher.close()
                publisher = None
            else:
                for e in result.sent:
                    _echo_event(e)
                for path, why in result.skipped:
                    click.echo(f"skipped {path}: {why}", err=True)
                if result.sent or not watch:
                    click.echo(
                        f"synced {folder}: {len(result.upserts)} new or changed, "
                        f"{len(result.deletes)} deleted, {result.unchanged} unchanged "
                        f"→ {publisher.topic} on {settings.kafka_bootstrap_servers}"
                    )
            if not watch or stop.wait(interval):
                break
    finally:
        if publisher:
            publisher.close()
