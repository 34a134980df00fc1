"""The generations this process serves and keeps current (see freshrag/generations/pointer.py).

One `Core` per live generation, each with its own index, encoders and ingest worker (its
own consumer group, so every event reaches both). The API's `Services` point at the
serving generation's retriever and answers; a switch replaces those in one step, so a
request uses one generation, with that generation's model, from start to end.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from api.app import Services
from api.auth import KeyStore
from api.waits import DocumentWatch
from freshrag.generations.copier import CopyProgress, CopyStopped, copy_index
from freshrag.generations.pointer import (
    CopyLease,
    Generation,
    GenerationError,
    Generations,
    Pointer,
    claim_copy,
    first_generation,
    generation_settings,
    model_name,
    new_generation,
    open_pointer,
    release_copy,
    renew_copy,
)
from freshrag.runtime import Core
from freshrag.settings import Settings
from freshrag.tuning.job import TuneJob
from ingest.broker import group_lag
from ingest.chunker import Chunker
from ingest.consumer import IngestWorker

log = logging.getLogger("freshrag.generations")


class Deployment:
    def __init__(
        self,
        settings: Settings,
        pointer: Pointer,
        gens: Generations,
        *,
        run_workers: bool = True,
        on_batch: Callable[[list], None] | None = None,
    ) -> None:
        self.settings = settings
        self.pointer = pointer
        self.gens = gens
        self.run_workers = run_workers
        self.on_batch = on_batch
        self.watch = DocumentWatch()  # shared: a long-poll wakes on either generation's write
        self.cores: dict[str, Core] = {}
        self.workers: dict[str, tuple[IngestWorker, threading.Thread]] = {}
        self.copy: CopyProgress | None = None
        self.copy_error: str | None = None
        # One stop event per copy, so a late lease thread of a finished copy cannot stop
        # the next one; `_no_copy` holds new copies back while a drop or close is under way.
        self._copy_stop = threading.Event()
        self._copy_thread: threading.Thread | None = None
        self._no_copy = 0  # drops under way
        self._services: Services | None = None
        self._stacks: dict[str, Services] = {}
        self._lag_cache: dict[str, tuple[float, int | None]] = {}
        self._drops: list[threading.Timer] = []
        self._keys: KeyStore | None = None
        self._lock = threading.RLock()
        self._closing = threading.Event()
        # `freshrag tune` learns from the serving generation's chunks, for its model.
        # It steps aside while any generation here serves a query or indexes an edit.
        self.tuner = TuneJob(
            settings,
            lambda: (self.core.index, self.gens.serving.model),
            busy=lambda: any(c.busy(settings.tune_quiet_s) for c in list(self.cores.values())),
        )
        # Copies of a standby: whether this process takes them (API processes do, workers
        # do not), who it is in the lease, and who else holds the lease if not this one.
        self.copies = False
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.copy_holder: CopyLease | None = None
        self._copy_failed_at = 0.0
        self._copy_failures = 0  # in a row: each doubles the wait before the next try

    @classmethod
    def open(cls, settings: Settings, **kwargs: Any) -> Deployment:
        """Opens the serving generation (and a standby, if one is being built or kept)."""
        pointer = open_pointer(settings)
        gens = pointer.load()
        new = gens is None
        if gens is None:  # an index from before generations: it is generation g1
            gens = Generations(first_generation(settings))
        if gens.serving.model != settings.model:
            log.warning(
                "the index serving here (generation %s) was built with %s: queries use that "
                "model, not FRESHRAG_MODEL=%s; `freshrag reindex --model` migrates to another",
                gens.serving.name,
                gens.serving.model,
                settings.model,
            )
        dep = cls(settings, pointer, gens, **kwargs)
        for gen in gens.live():
            dep._open(gen)
        if new:  # after its collections exist: a server alias must name a real one
            pointer.save(gens)
        return dep

    # --- cores and workers -------------------------------------------------------------

    def _open(self, gen: Generation) -> Core:
        settings = generation_settings(self.settings, gen)
        core = self.cores.get(gen.name)
        if core is not None and core.settings != settings:
            self._retire(gen.name)  # same name, another build (dropped and made again)
            core = None
        if core is None:
            core = Core.open(settings, watch=self.watch)
            self.cores[gen.name] = core
        return core

    def _retire(self, name: str) -> Core | None:
        """Stops a generation's worker and forgets it here; returns its core (still open)."""
        self._stop_worker(name)
        self._stacks.pop(name, None)
        return self.cores.pop(name, None)

    @property
    def core(self) -> Core:
        """The serving generation's core."""
        return self.cores[self.gens.serving.name]

    def start(self, copy: bool = True) -> None:
        """Workers for every complete generation; with `copy`, a standby's unfinished copy
        resumes here (chunks already copied are kept) unless another process holds its
        lease; then this one takes over if that process stops renewing it."""
        with self._lock:
            self.copies = copy
            self._start_workers()
            self._resume_copy()

    def _resume_copy(self) -> None:
        standby = self.gens.standby
        if not self.copies or standby is None or self.gens.standby_ready:
            return
        if self._no_copy or self._closing.is_set():
            return
        if self._copy_thread is not None and self._copy_thread.is_alive():
            return
        if self._copy_failures:  # failed here: retried here or elsewhere, backing off
            lease_s = self.settings.generation_copy_lease_s
            wait = lease_s * 2 ** min(self._copy_failures - 1, 6)
            if time.monotonic() - self._copy_failed_at < wait:
                return
        self._start_copy(standby)

    def _start_workers(self) -> None:
        for gen in self.gens.live():
            if gen == self.gens.serving or self.gens.standby_ready:
                self._start_worker(gen)

    def follow(self, interval_s: float) -> None:
        """Re-reads the pointer every `interval_s`: with a Qdrant server, API replicas and
        workers in other processes follow a reindex or switch made through one of them."""

        def loop() -> None:
            while not self._closing.wait(interval_s):
                try:
                    self.refresh()
                except Exception:
                    log.exception("reading the generations pointer failed; retrying")

        threading.Thread(target=loop, name="generations", daemon=True).start()

    def refresh(self) -> None:
        """Applies the pointer's state if another process changed it; takes over a
        standby's copy whose process stopped renewing the lease."""
        gens = self.pointer.load()
        with self._lock:
            if gens is not None and gens != self.gens:
                self._apply(gens)
                log.info("following generation %s (%s)", gens.serving.name, gens.serving.model)
            self._resume_copy()

    def _apply(self, gens: Generations) -> None:
        for gen in gens.live():
            self._open(gen)  # loads the model before anything is switched
        live = {g.name for g in gens.live()}
        if self.gens.standby is not None and gens.standby != self.gens.standby:
            self._copy_stop.set()  # dropped (or switched) by another process: stop copying it
        if gens.standby != self.gens.standby or gens.standby_ready:
            self.copy_error = None  # whatever failed here is another build's, or was redone
        self.gens = gens
        self._serve()
        self._start_workers()
        for name in [n for n in self.cores if n not in live]:
            core = self._retire(name)
            if core is not None:
                core.index.close()

    def _current(self) -> None:
        """Before a change: the pointer as it is now (another process may have moved it)."""
        gens = self.pointer.load()
        if gens is not None and gens != self.gens:
            self._apply(gens)

    def _start_worker(self, gen: Generation, indexer: Any = None) -> None:
        if not self.run_workers or gen.name in self.workers:
            return
        core = self.cores[gen.name]
        # Both generations' workers dead-letter what fails: during a migration the DLQ may
        # get an event twice, never zero times (the faster one may meet it first).
        worker = core.worker(
            indexer,
            client_id=f"freshrag-worker-{gen.name}",
            on_batch=self.on_batch if gen == self.gens.serving else None,
        )
        thread = threading.Thread(target=worker.run, name=f"worker-{gen.name}", daemon=True)
        thread.start()
        self.workers[gen.name] = (worker, thread)

    def workers_alive(self) -> bool:
        return all(t.is_alive() for _, t in list(self.workers.values()))

    def _stop_worker(self, name: str, deadline: float | None = None) -> bool:
        """Stop one worker and wait for it until `deadline` (monotonic; default: the
        shutdown timeout from now). False if it is still running then."""
        entry = self.workers.pop(name, None)
        if entry is None:
            return True
        entry[0].stop()
        if deadline is None:
            deadline = time.monotonic() + self.settings.shutdown_timeout_s
        entry[1].join(max(0.0, deadline - time.monotonic()))
        if entry[1].is_alive():
            log.error("the %s worker did not stop within the shutdown timeout", name)
            return False
        return True

    def stop_workers(self) -> None:
        """Ask every worker to stop now (they finish or interrupt their batch meanwhile)."""
        for worker, _ in list(self.workers.values()):
            worker.stop()

    # --- serving -------------------------------------------------------------------------

    def services(self, keys: KeyStore) -> Services:
        """The API's services, pointing at the serving generation (and following switches)."""
        self._keys = keys
        self._services = self.core.services(keys)
        self._services.watch = self.watch
        self._services.deployment = self
        self._services.tuner = self.tuner
        self._stacks[self.gens.serving.name] = self._services
        return self._services

    def standby_stack(self) -> Services:
        """The standby's retriever and answers (to compare it with the serving one before
        a switch): its index with its own model."""
        standby = self.gens.standby
        if standby is None or not self.gens.standby_ready:
            raise GenerationError("no complete standby generation to query")
        if standby.name not in self._stacks:
            self._stacks[standby.name] = self.cores[standby.name].services(self._keys)
        return self._stacks[standby.name]

    def _serve(self) -> None:
        """Points the API at the serving generation. Each field swap is atomic and a
        request reads the retriever (an index and its model) once, so none mixes the two."""
        if self._services is None:
            return
        name = self.gens.serving.name
        fresh = self._stacks.get(name) or self.cores[name].services(self._keys)
        target = self._services
        old = replace(target)  # what served until now: kept for standby queries
        target.retriever = fresh.retriever
        target.answers = fresh.answers
        target.index = fresh.index
        target.ingest_status = fresh.ingest_status
        target.ingest_ready = fresh.ingest_ready
        self._stacks = {name: target}
        if self.gens.standby is not None:  # the one that served: still queryable as standby
            self._stacks[self.gens.standby.name] = old

    # --- migration -----------------------------------------------------------------------

    def reindex(self, model: str) -> dict[str, Any]:
        """Starts a standby generation for `model`, copied from the serving one in the
        background; raises GenerationError if one exists, ValueError if the model fails."""
        with self._lock:
            self._current()
            gen = new_generation(self.settings, self.gens, model)
            gens = self.gens.with_standby(gen)  # raises when one exists
            try:
                self._open(gen)  # loads the model: a bad name fails here, nothing written
            except Exception as exc:
                raise ValueError(f"cannot load model {model!r}: {exc}") from exc
            self.pointer.save(gens)
            self.gens = gens
            self._start_copy(gen)
            log.info("generation %s (%s): copying from %s", gen.name, model, gens.serving.name)
            return self.status()

    def _start_copy(self, gen: Generation) -> None:
        holder = claim_copy(
            self.pointer, gen.group, self.owner, self.settings.generation_copy_lease_s
        )
        if holder is None and self.pointer.shared:
            # The holder may have finished between our pointer read and the claim.
            now = self.pointer.load()
            if now is not None and (now.standby != gen or now.standby_ready):
                release_copy(self.pointer, gen.group, self.owner)
                return
        if holder is not None:
            if holder != self.copy_holder:
                log.info(
                    "generation %s: %s is copying it; this process takes over if that one "
                    "stops renewing its lease",
                    gen.name,
                    holder.owner,
                )
            self.copy_holder = holder
            self.copy_error = None  # the holder retries it: a failure here is not the state
            return
        self.copy_holder = None
        stop = self._copy_stop = threading.Event()
        self.copy, self.copy_error = CopyProgress(), None
        self._copy_thread = threading.Thread(
            target=self._run_copy, args=(gen, stop), name=f"copy-{gen.name}", daemon=True
        )
        self._copy_thread.start()

    def _renew_lease(self, gen: Generation, done: threading.Event, stop: threading.Event) -> None:
        """Renews the copy lease at a third of its length until the copy ends; a process
        that finds it taken stops its copy (the other one goes on)."""
        lease_s = self.settings.generation_copy_lease_s
        while not done.wait(lease_s / 3):
            try:
                if renew_copy(self.pointer, gen.group, self.owner, lease_s):
                    continue
                holder = self.pointer.load_lease()
            except Exception:
                log.warning("renewing the copy lease failed; retrying", exc_info=True)
                continue
            log.warning(
                "generation %s: the copy lease is %s's now; stopping the copy here",
                gen.name,
                holder.owner if holder else "nobody",
            )
            self.copy_holder = holder
            stop.set()
            return

    def _run_copy(self, gen: Generation, stop: threading.Event) -> None:
        done = threading.Event()
        threading.Thread(
            target=self._renew_lease,
            args=(gen, done, stop),
            name=f"lease-{gen.name}",
            daemon=True,
        ).start()
        try:
            self._copy(gen, stop)
        except Exception as exc:  # setting it up failed (the model's child, a closed index)
            if not stop.is_set():
                self.copy_error = f"{type(exc).__name__}: {exc}"
                log.exception("copying generation %s failed", gen.name)
        finally:
            done.set()
        if self.copy_error and not stop.is_set():
            self._copy_failures += 1  # its lease is left to run out: the retry waits
            self._copy_failed_at = time.monotonic()
            return
        self._copy_failures = 0
        try:
            release_copy(self.pointer, gen.group, self.owner)
        except Exception:
            log.warning("releasing the copy lease failed (it runs out)", exc_info=True)

    def _copy(self, gen: Generation, stop: threading.Event) -> None:
        core = self.cores[gen.name]
        s = core.settings
        indexer = core.indexer(self.watch.notify)  # its embedder child serves the copy too
        chunker = Chunker(s.chunk_size, s.chunk_overlap, headers=s.chunk_headers, model=s.model)
        started = time.monotonic()
        handed_to_worker = False
        try:
            indexer.warm_up()
            copy_index(
                self.cores[self.gens.serving.name].index,
                core.index,
                chunker,
                indexer.processor.encode,
                core.sparse,
                on_progress=self._progress,
                stop=stop,
            )
            with self._lock:
                if self.gens.standby != gen:  # dropped meanwhile
                    return
                self.gens = self.gens.ready()
                self.pointer.save(self.gens)
                # From now on events keep it current; without workers here, `freshrag
                # worker` processes following the pointer do.
                if self.run_workers:
                    self._start_worker(gen, indexer)
                    handed_to_worker = True
        except CopyStopped:
            return
        except Exception as exc:  # reported by status(); retried after a back-off
            if stop.is_set():
                return  # stopped: its index may have been closed under it
            self.copy_error = f"{type(exc).__name__}: {exc}"
            log.exception("copying generation %s failed", gen.name)
            return
        finally:
            if not handed_to_worker:
                indexer.processor.close()
        log.info(
            "generation %s (%s) copied in %.0f s; its worker catches up with the topic",
            gen.name,
            gen.model,
            time.monotonic() - started,
        )

    def _progress(self, progress: CopyProgress) -> None:
        self.copy = progress

    def _lag(self, gen: Generation) -> int | None:
        """Events `gen` has yet to apply: its worker's last look here, else the broker's."""
        entry = self.workers.get(gen.name)
        if entry is not None:
            lag = entry[0].status()["lag"]
            return sum(lag.values()) if lag else None  # None: not polled yet
        cached = self._lag_cache.get(gen.name)  # asking the broker costs a connection
        if cached is None or time.monotonic() - cached[0] > 1.0:
            cached = (time.monotonic(), group_lag(self.cores[gen.name].settings))
            self._lag_cache[gen.name] = cached
        return cached[1]

    def caught_up(self) -> bool:
        """The standby is complete and no staler than the serving generation: under a live
        stream neither lag stays at 0, so equal freshness is the bar, not zero."""
        standby = self.gens.standby
        if standby is None or not self.gens.standby_ready:
            return False
        lag = self._lag(standby)
        serving = self._lag(self.gens.serving)
        return lag is not None and lag <= max(serving or 0, 0)

    def switch(self, force: bool = False, wait_s: float = 10.0) -> dict[str, Any]:
        """The standby serves from the next request on; the old one stays current.
        Waits up to `wait_s` for the standby to be as fresh as the serving generation."""
        deadline = time.monotonic() + wait_s
        while not force and not self.caught_up() and time.monotonic() < deadline:
            time.sleep(0.2)
        with self._lock:
            self._current()
            gens = self.gens.switched()  # raises without a complete standby
            if not force and not self.caught_up():
                raise GenerationError(
                    f"generation {gens.serving.name} is behind the serving one (more events "
                    "left to apply; status shows both lags): retry, or force the switch"
                )
            self.pointer.save(gens)
            self.gens = gens
            self._serve()
            for name, (worker, _) in self.workers.items():
                worker.on_batch = self.on_batch if name == gens.serving.name else None
            log.info("generation %s (%s) now serves", gens.serving.name, gens.serving.model)
            return self.status()

    def drop_standby(self, grace_s: float | None = None) -> dict[str, Any]:
        """Stops and deletes the standby: an unwanted build, or the old one after a switch.
        Its storage goes after `grace_s` (default: two pointer polls), so requests that
        started on it and processes still following it finish first."""
        with self._lock:  # no pointer poll may start a copy between this stop and the drop
            self._no_copy += 1
            self._copy_stop.set()
            copying = self._copy_thread
        try:
            if copying is not None:  # outside the lock: a finishing copy takes it
                copying.join(60)
            return self._drop_standby(grace_s)
        finally:
            with self._lock:
                self._no_copy -= 1

    def _drop_standby(self, grace_s: float | None) -> dict[str, Any]:
        with self._lock:
            self._current()
            gens = self.gens.without_standby()
            gen = self.gens.standby
            assert gen is not None
            self._copy_thread = None
            self.pointer.save(gens)
            self.gens = gens
            core = self._retire(gen.name)
            self.copy = None
            grace = 2 * self.settings.generation_poll_s if grace_s is None else grace_s
            if core is not None:
                timer = threading.Timer(grace, core.index.drop)
                timer.daemon = False  # the delete must happen even if the service stops
                timer.start()
                self._drops.append(timer)
            log.info("generation %s (%s) dropped", gen.name, gen.model)
            return self.status()

    # --- reporting -----------------------------------------------------------------------

    def status(self, public: bool = False) -> dict[str, Any]:
        """For operators; `public` (/readyz, no key) leaves out collection names and errors."""

        def describe(gen: Generation) -> dict[str, Any]:
            out: dict[str, Any] = {"name": gen.name, "model": model_name(self.settings, gen)}
            if not public:
                out["collection"] = gen.collection
            if gen.name in self.workers:
                out["lag"] = self._lag(gen)
            return out

        status: dict[str, Any] = {"serving": describe(self.gens.serving), "standby": None}
        standby = self.gens.standby
        if standby is not None:
            info = describe(standby)
            info["state"] = (
                "ready" if self.gens.standby_ready else "failed" if self.copy_error else "copying"
            )
            if self.copy is not None:
                info["copy"] = {
                    "documents": self.copy.documents,
                    "total_documents": self.copy.total_documents,
                    "embedded": self.copy.embedded,
                    "kept": self.copy.kept,
                }
            if self.copy_error and not public:
                info["error"] = self.copy_error
            holder = self.copy_holder
            if holder is not None and not self.gens.standby_ready and not public:
                info["copied_by"] = holder.owner  # another process holds the copy's lease
            info["caught_up"] = self.caught_up()
            status["standby"] = info
        return status

    def close(self, deadline: float | None = None) -> None:
        """Stop workers and copies, then close the indexes, by `deadline` (monotonic;
        default: `shutdown_timeout_s` from now). An index a worker still writes to is
        left open: the process is exiting, and closing it under a writer is worse."""
        if deadline is None:
            deadline = time.monotonic() + self.settings.shutdown_timeout_s
        with self._lock:  # a pointer poll holding the lock finishes before; none starts after
            self._closing.set()
            self._copy_stop.set()
        self.tuner.close()
        self.stop_workers()
        for timer in self._drops:  # the service stops: no request is left to finish
            if timer.is_alive():
                timer.cancel()
                timer.function()
        if self._copy_thread is not None:
            self._copy_thread.join(max(0.0, deadline - time.monotonic()))
        busy = {name for name in list(self.workers) if not self._stop_worker(name, deadline)}
        for name, core in self.cores.items():
            if name not in busy:
                core.index.close()
