"""What every `freshrag` command shares: the click group, logging, signals and the
shutdown deadline, the client commands' broker and key helpers."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

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

    Every setting is an environment variable with the FRESHRAG_ prefix (docs/reference/configuration.md).
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


def _admin_api(url: str | None, api_key: str | None):  # noqa: ANN202
    """`call(method, path, **httpx kwargs) -> JSON` against the service's admin API, with
    `api_key` or this machine's first admin key; transport failures exit 3, HTTP errors
    print the service's detail."""
    import httpx

    settings = Settings()
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
            r = http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(f"the service at {url} does not answer: {exc}") from exc
        if r.status_code >= 400:
            detail = r.json().get("detail", r.text) if r.content else r.reason_phrase
            raise click.ClickException(f"{r.status_code}: {detail}")
        return r.json()

    return call


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
