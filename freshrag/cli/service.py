"""Run the service: `up` (everything, embedded), `serve` (the API), `worker`."""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING

import click

from freshrag.cli._base import (
    Unreachable,
    _Deadline,
    _stop_on_signals,
    _wait_until_ready,
    cli,
    log,
    tqdm,
)
from freshrag.settings import Settings

if TYPE_CHECKING:
    from api.auth import KeyStore


@cli.command()
@click.option(
    "--sample/--no-sample",
    default=True,
    show_default=True,
    help="Publish the Django docs sample corpus once the service is up.",
)
@click.option(
    "--sample-limit", type=int, default=None, help="Publish only the first N sample pages."
)
def up(sample: bool, sample_limit: int | None) -> None:
    """Start broker, worker and API in one process on embedded defaults."""
    from api.app import create_app
    from api.auth import ensure_dev_keys
    from freshrag.generations.controller import Deployment
    from freshrag.runtime import EmbeddedBroker, ServerThread, host_port
    from ingest.broker import ensure_topics

    settings = Settings()
    _trace()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stop = _stop_on_signals()
    broker = None
    if settings.embedded_broker:
        host, port = host_port(settings.kafka_bootstrap_servers)
        on_disk = settings.embedded_broker_storage == "disk"
        broker = EmbeddedBroker(
            host,
            port,
            settings.data_dir / "broker.log",
            storage_dir=settings.data_dir / "broker" if on_disk else None,
        ).start()
        log.info("Tansu broker (%s) on %s", broker.mode, broker.bootstrap)
    ensure_topics(settings)
    key = None if settings.api_keys else ensure_dev_keys(settings.resolved_api_keys_file)
    keys = load_keys(settings)
    log.info("loading the embedding model and opening the index…")
    failed: set[str] = set()
    dep = Deployment.open(
        settings,
        on_batch=lambda outs: failed.update(o.event.doc_id for o in outs if o.status == "failed"),
    )
    core = dep.core
    log.info(
        "index: %s backend, generation %s, model %s (%d-d)",
        core.index.backend,
        dep.gens.serving.name,
        core.settings.model,
        core.dense.dim,
    )
    dep.start()
    server = ServerThread(create_app(dep.services(keys)), settings.host, settings.port).start()
    try:
        log.info("API listening on %s (docs: %s/docs)", server.url, server.url)
        _wait_until_ready(dep, stop)
        if sample and not stop.is_set():
            events, version = _publish_sample(settings, sample_limit or settings.sample_limit)
        if not stop.is_set():
            _banner(
                server.url, key, broker.mode if broker else None, str(settings.data_dir.resolve())
            )
        if sample and not stop.is_set():
            _follow_indexing(core, events, version, stop, failed)
        while not stop.wait(0.5):
            if not dep.workers_alive():
                log.error("an ingest worker stopped unexpectedly; shutting down")
                break
    finally:
        # Workers first (they finish or interrupt the batch in hand and commit while the
        # broker is up), the API meanwhile, the embedded broker last.
        deadline = _Deadline(settings.shutdown_timeout_s, broker)
        dep.stop_workers()
        server.stop(timeout_s=min(5.0, settings.shutdown_timeout_s / 4))
        dep.close(deadline.left(keep_s=2.0))
        if broker:
            broker.stop(timeout_s=max(0.5, deadline.left() - time.monotonic()))
        deadline.done()
        log.info("bye")


def _publish_sample(settings: Settings, limit: int | None) -> tuple[list, int]:
    """Publish the Django docs to the backfill topic; returns the events and their version.

    A backfill: the worker applies it only when no live event waits, so a document you
    publish by hand while the sample loads is searchable within seconds, not minutes.
    """
    from ingest.publisher import Publisher, build_events
    from ingest.sample import django_docs, doc_files, release_version, sample_metadata

    docs = django_docs(settings.sample_django_version, settings.data_dir / "samples")
    version = release_version(settings.sample_django_version)
    events = [
        e
        for f in doc_files(docs, limit)
        for e in build_events(
            [f],
            root=docs,
            mime="text/x-rst",
            prefix="django/",
            version=version,
            metadata=sample_metadata(f, docs, settings.sample_django_version),
        )
    ]
    publisher = Publisher(settings.kafka_bootstrap_servers, settings.backfill_topic)
    try:
        publisher.publish(events, desc=f"publishing Django {settings.sample_django_version} docs")
    finally:
        publisher.close()
    return events, version


def _follow_indexing(
    core, events: list, version: int, stop: threading.Event, failed: set[str]
) -> None:  # noqa: ANN001
    """A progress bar until every published page is indexed (or dead-lettered)."""
    started = time.monotonic()
    pending = {e.doc_id for e in events}
    with tqdm(total=len(pending), desc="indexing the sample", unit="doc") as bar:
        while pending and not stop.is_set():
            done = {
                d
                for d in pending
                if (s := core.index.get_document("default", d)) and s.version >= version
            }
            done |= pending & failed
            pending -= done
            bar.update(len(done))
            if pending:
                time.sleep(0.5)
    if not pending:
        log.info(
            "sample indexed: %d pages in %.0fs (%d dead-lettered, see %s)",
            len(events),
            time.monotonic() - started,
            len(failed),
            core.settings.dlq_topic,
        )


def _banner(
    url: str, key: str | None, embedded_broker: str | None = None, data_dir: str = "./data"
) -> None:
    shown = key or "<your key>"
    broker_note = {
        "memory-only": (
            "\nThe embedded broker keeps events in memory only "
            "(FRESHRAG_EMBEDDED_BROKER_STORAGE=memory): events\n"
            "not yet indexed and the dead-letter topic are lost when it stops (the index under\n"
            f"{data_dir} stays). /readyz and the worker's log say so after a restart. Unset it to\n"
            "keep them on disk.\n"
        ),
        "on disk": (
            f"\nThe embedded broker keeps events on disk under {data_dir}/broker: what a producer\n"
            "saw acknowledged and the dead-letter topic survive a restart.\n"
        ),
    }.get(embedded_broker or "", "")
    print(
        f"""
FreshRAG is up.
  API      {url}        (OpenAPI docs: {url}/docs, metrics: {url}/metrics)
  API key  {shown}

Try:
  curl -s {url}/retrieve -H 'Authorization: Bearer {shown}' \\
       -H 'Content-Type: application/json' \\
       -d '{{"query": "How do I use Django with Gunicorn?", "top_k": 3}}'

Ctrl-C stops everything (the index stays under {data_dir}). The API answers while the
sample is still being indexed; the bar below shows how far it got.
{broker_note}""",
        flush=True,
    )


@cli.command()
def serve() -> None:
    """Run the API only (pair it with `freshrag worker` and FRESHRAG_QDRANT_URL)."""
    import uvicorn

    from api.app import create_app
    from freshrag.generations.controller import Deployment

    settings = Settings()
    _trace()
    if not settings.qdrant_url:
        log.warning(
            "no FRESHRAG_QDRANT_URL: serving from the embedded shard; no worker may open it"
        )
    keys = load_keys(settings)
    dep = Deployment.open(settings, run_workers=False)
    dep.start()  # resumes a standby's interrupted copy; workers run in `freshrag worker`
    if settings.qdrant_url:
        dep.follow(settings.generation_poll_s)
    try:
        uvicorn.run(
            create_app(dep.services(keys)),
            host=settings.host,
            port=settings.port,
            timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout_s / 2)),
        )
    finally:
        dep.close(time.monotonic() + settings.shutdown_timeout_s / 2)


@cli.command()
def worker() -> None:
    """Run one ingest worker per live index generation (each a member of its generation's
    consumer group). SIGTERM finishes the batch in hand, then exits."""
    from freshrag.generations.controller import Deployment
    from ingest.broker import ensure_topics
    from ingest.publisher import BrokerUnreachable, check_broker

    settings = Settings()
    _trace()
    try:  # one line within seconds, not the admin client's 30 s of connection errors
        check_broker(settings.kafka_bootstrap_servers)
    except BrokerUnreachable as exc:
        raise Unreachable(str(exc)) from exc
    stop = _stop_on_signals()
    ensure_topics(settings)
    dep = Deployment.open(settings)
    dep.start(copy=False)  # a standby's copy runs in the API process that started it
    if settings.qdrant_url:
        dep.follow(settings.generation_poll_s)
    try:
        _wait_until_ready(dep, stop)
        while not stop.wait(0.5):
            if not dep.workers_alive():
                log.error("an ingest worker stopped unexpectedly; exiting")
                sys.exit(1)
    finally:
        deadline = _Deadline(settings.shutdown_timeout_s)
        dep.close(deadline.left())
        deadline.done()


def _trace() -> None:
    """Traces over OTLP/HTTP when OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT names a collector
    (docs/how-to/tracing.md); otherwise nothing is started."""
    from freshrag.telemetry import configure

    configure()


def load_keys(settings: Settings) -> KeyStore:
    """The API keys, or a clean stop naming the entry and field at fault (no traceback)."""
    from api.auth import KeyStore

    try:
        return KeyStore.load(settings.api_keys, settings.resolved_api_keys_file)
    except ValueError as exc:  # json.JSONDecodeError is one too
        where = "FRESHRAG_API_KEYS" if settings.api_keys else settings.resolved_api_keys_file
        raise click.ClickException(f"bad API keys in {where}: {exc}") from exc
