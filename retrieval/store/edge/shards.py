"""The chunks shard that serves, the spare copy the optimiser rebuilds, and their swap."""

from __future__ import annotations

import logging
import os
import resource
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from freshrag.files import sync_file
from retrieval.memory import drop_mapped_pages, trim_heap
from retrieval.store.edge import rebuild
from retrieval.store.edge.layout import (
    live_dir,
    load_state,
    op_logs,
    open_shard,
    other_dir,
    save_state,
    state_path,
)
from retrieval.store.edge.lock import lock_collection
from retrieval.store.edge.oplog import Record, apply, encode, log_bytes, record_points, replay
from retrieval.store.edge.warming import warm as warm_files

log = logging.getLogger("retrieval.edge")  # the name it logged under as one module

_SEARCH_WAIT_MAX_S = 0.2  # the longest a search lets writes go first (ChunkShards.reading)


def _major_faults() -> int:
    """Page faults this thread has served from disk so far."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_majflt


class _Live:
    """The serving shard and how many calls are inside it (it is closed only at zero)."""

    __slots__ = ("shard", "path", "users")

    def __init__(self, shard: qe.EdgeShard, path: Path) -> None:
        self.shard = shard
        self.path = path
        self.users = 0


class ChunkShards:
    """The chunks shard that serves, the spare copy the optimiser rebuilds, and the op log.

    Without `log_writes` this is just the shard. With it, every write is also appended to
    an op log, so the spare (the same data as the live shard at the start of the log) can
    be brought up to date in another process and swapped in.
    """

    def __init__(
        self,
        root: Path,
        collection: str,
        config: qe.EdgeConfig,
        log_writes: bool,
        warm: bool = False,
    ):
        self.root = root
        self.collection = collection
        self.config = config
        self.log_writes = log_writes
        self._state_path = state_path(root, collection)
        self._cond = threading.Condition()  # guards _live and the users counts
        self._write_lock = threading.Lock()  # one write (apply + log) at a time; swaps wait
        self._log_fh: Any = None
        self.log_path: Path | None = None
        self.pending = 0  # points written since the live shard was last optimised
        self.dirty = 0  # points written since the live shard was last flushed
        self.dirty_since = 0.0  # monotonic time of the first of them
        self.spare_valid = False
        # True until a swap makes an optimised copy live: the live shard may then hold any
        # number of unoptimised points (an upgrade, a crash, a failed cycle).
        self.live_unoptimised = False
        self.on_write: Callable[[], None] | None = None
        # Writes that reached Edge so far, and those done (guarded by _cond): see reading().
        self._writes_started = 0
        self._writes_done = 0
        self._lock_fd = lock_collection(root, collection)  # before anything on disk changes
        try:
            self._open(warm)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _open(self, warm: bool) -> None:
        """Opens the live shard; with the op log, resumes a spare closed cleanly."""
        root, collection, log_writes = self.root, self.collection, self.log_writes
        shutil.rmtree(self.next_spare_path, ignore_errors=True)  # a swap cut short
        state = load_state(self._state_path)
        live_path = live_dir(root, collection, state)
        if warm:  # memory-mapped segments: read them now, not during the first queries
            warm_files(live_path)
        self._live = _Live(open_shard(live_path, self.config), live_path)
        if log_writes and rebuild.needs_rebuild(self._live.shard.info(), rebuild.REPLAY_STEP):
            log.warning(
                "edge: the chunks shard in %s holds many points no optimisation has "
                "indexed (filled before the optimiser, or with FRESHRAG_EDGE_OPTIMIZER=off). "
                "The first cycle rebuilds it in the background, and closing it afterwards "
                "pauses queries and writes for about 1 s per million points; to avoid that "
                "pause, stop the service and run `freshrag optimize` first",
                live_path,
            )
        if not log_writes:
            if state:
                self._write_state(spare_valid=False)  # unlogged writes: the spare is stale
            return
        log_path = root / state["log"] if state.get("log") else None
        resumable = (
            state.get("spare_valid")
            and log_path is not None
            and log_path.exists()
            and (self.spare_path / "edge_config.json").exists()
        )
        if resumable:  # closed cleanly: spare + log still equal the live shard
            self.log_path, self.spare_valid = log_path, True
            self._log_fh = open(log_path, "ab")  # noqa: SIM115 (lives as long as the store)
            self.pending = 1 if log_path.stat().st_size else 0
            self._write_state(spare_valid=False)  # a crash from here on loses log records
        self._drop_stale_logs()

    # --- paths and state --------------------------------------------------------------

    @property
    def live_path(self) -> Path:
        return self._live.path

    @property
    def spare_path(self) -> Path:
        return other_dir(self.root, self.collection, self._live.path)

    @property
    def next_spare_path(self) -> Path:
        """Where the child leaves a copy of its result when that copy, not the old live
        shard, is to become the spare (`spare_from_child`)."""
        return self.root / f"{self.collection}.c"

    def spare_from_child(self) -> bool:
        """Whether the next spare should be a copy of the child's optimised result rather
        than the old live shard: when the live shard was never swapped in (an upgrade, a
        crash, a failed cycle), it may hold any number of unoptimised points, which the
        next cycle would have to index all over again (a whole rebuild, where the copy
        needs only what is new: `bench.scale`'s cycle 2)."""
        return self.live_unoptimised

    def _write_state(self, spare_valid: bool, durable: bool = True) -> None:
        """Atomically: which dir is live, the current log, and whether the spare matches it."""
        log_name = self.log_path.name if self.log_path else None
        save_state(self._state_path, self._live.path.name, log_name, spare_valid, durable)

    def _drop_stale_logs(self) -> None:
        for p in op_logs(self.root, self.collection):
            if p != self.log_path:
                p.unlink(missing_ok=True)

    def _new_log(self) -> None:
        """Starts an empty op log (the spare equals the live shard at this point).

        The caller drops the old log after letting writes go: unlinking a log of a million
        points takes ext4 about half a second, and writes would wait for it.
        """
        if self._log_fh is not None:
            self._log_fh.close()
        self.log_path = self.root / f"{self.collection}.oplog.{time.time_ns()}"
        self._log_fh = open(self.log_path, "ab")  # noqa: SIM115 (lives as long as the store)

    # --- access -----------------------------------------------------------------------

    @contextmanager
    def use(self) -> Iterator[qe.EdgeShard]:
        """The live shard for one call; a swap closes the old one only after such calls end."""
        with self._cond:
            live = self._live
            live.users += 1
        try:
            yield live.shard
        finally:
            with self._cond:
                live.users -= 1
                if live.users == 0:
                    self._cond.notify_all()

    @contextmanager
    def reading(self) -> Iterator[qe.EdgeShard]:
        """The live shard for a search, entered only after the writes already in Edge.

        Edge starts a search while an update waits for the ones in flight, so back-to-back
        searches can keep a write out: on a never-optimised 1M-point shard (searches of
        55 ms) writes beside a query every 50 ms waited up to 1.3 s, and 24 ms without the
        queries (issue 12's closing note). A search that arrives while a write is in Edge
        lets it finish first, which costs the search that write's time (milliseconds; at most
        `_SEARCH_WAIT_MAX_S`, for a long write such as a payload index build).
        Writes held back by a swap are not in Edge, so searches never wait for a swap.
        """
        with self._cond:
            ticket = self._writes_started
            if self._writes_done < ticket:
                self._cond.wait_for(lambda: self._writes_done >= ticket, _SEARCH_WAIT_MAX_S)
        with self.use() as shard:
            yield shard

    @property
    def shard(self) -> qe.EdgeShard:
        """The live shard (no use count: for callers that own the lifecycle, e.g. a bench)."""
        return self._live.shard

    def write(self, rec: Record) -> None:
        with self._write_lock:
            with self._cond:
                self._writes_started += 1
            try:
                with self.use() as shard:
                    apply(shard, rec)
            finally:
                with self._cond:
                    self._writes_done += 1
                    self._cond.notify_all()
            if self._log_fh is not None:
                self._log_fh.write(encode(rec))
                self._log_fh.flush()  # to the OS, where the child reads it
            n = record_points(rec)
            self.pending += n
            if not self.dirty:
                self.dirty_since = time.monotonic()
            self.dirty += n
        if self.on_write is not None:
            self.on_write()

    # --- the optimiser's side ---------------------------------------------------------

    def flush(self) -> None:
        """Persists the live shard. Edge never flushes by itself and a flush holds the GIL
        for as long as the unflushed data takes to write (0.25 s for 30k points here, about
        20 ms for a few), so the optimiser flushes once 2000 points or 30 s have piled up
        and a swap's close has little left to do."""
        if self.dirty:
            self.dirty = 0
            with self.use() as shard:
                shard.flush()

    def make_spare(self) -> float:
        """Copies the live shard to the spare with writes held; returns the seconds taken.

        Needed once per fresh start (and after a crash or a failed cycle): afterwards the
        two dirs swap roles and nothing is copied again. Queries keep running meanwhile.
        """
        t0 = time.monotonic()
        with self._write_lock:
            with self.use() as shard:
                shard.flush()
            shutil.rmtree(self.spare_path, ignore_errors=True)
            shutil.copytree(self.live_path, self.spare_path)
            self._new_log()
            self.spare_valid = True
            self.live_unoptimised = True
            self._write_state(spare_valid=False)
        self._drop_stale_logs()
        return time.monotonic() - t0

    def swap(self, offset: int, from_copy: bool = False) -> dict[str, float]:
        """Makes the (optimised, warm) spare live; the old live dir becomes the spare.

        `offset` is how far into the log the spare already is. Returns the pauses: `load_s`
        (the load holds the GIL, so everything waits), `tail_s` (writes wait while the last
        records are replayed) and `close_s` (closing the old shard, GIL again); and what
        nothing waits for: `catch_up_s` (replaying what came meanwhile) and `drop_log_s`.

        With `from_copy`, the child left a copy of the spare as it was at `offset` in
        `next_spare_path`: that copy becomes the spare instead, and the new log starts
        with the records it lacks.
        """
        assert self.log_path is not None
        t0, f0 = time.monotonic(), _major_faults()
        new_path = self.spare_path
        copy_offset = offset
        new = qe.EdgeShard.load(str(new_path), self.config)
        t1, f1 = time.monotonic(), _major_faults()
        swapped = False
        caught_up = 0
        try:
            # Catch up without holding writes (they keep going to the old shard and the
            # log, in order); then only the last few points are replayed with writes held.
            # Down to a few: replaying beside slow searches (a never-optimised live shard)
            # took 3 ms a point. Stop early when writes come faster than the replay.
            previous = None
            for _ in range(20):
                offset, n = replay(new, self.log_path, offset)
                caught_up += n
                if n < 50 or (previous is not None and n >= previous):
                    break
                previous = n
            t2, f2 = time.monotonic(), _major_faults()
            with self._write_lock:
                offset, tail = replay(new, self.log_path, offset)
                with self._cond:
                    old = self._live
                    self._live = _Live(new, new_path)
                swapped = True
                old_log = self.log_path
                self._new_log()
                if from_copy:  # the copy lacks what the child did not replay: log it again
                    self._log_fh.write(log_bytes(old_log, copy_offset, offset))
                    self._log_fh.flush()
                self.pending = self.dirty = tail
                # Otherwise the spare is the old live dir, equal to the new one right now.
                self.spare_valid = not from_copy
                self.live_unoptimised = False
                self._write_state(spare_valid=False, durable=False)  # no disk wait here
        except BaseException:
            if not swapped:
                new.close()
            raise
        t3, f3 = time.monotonic(), _major_faults()
        synced = True
        try:  # writes go on meanwhile; before any dir is replaced below
            sync_file(self._state_path)
        except OSError:  # the swap is done: the old shard must still be closed
            synced = False
            log.exception("edge: syncing %s failed", self._state_path)
        with self._cond:
            idle = self._cond.wait_for(lambda: old.users == 0, timeout=60)
        if idle:
            try:  # without the GIL: the close below then holds it for less
                drop_mapped_pages(old.path)
            except Exception:  # only a shorter pause: never in the way of the close
                log.exception("edge: dropping the old shard's mapped pages failed")
        else:
            log.warning("edge: a call still inside the old shard after 60 s; closing it")
        old.shard.close()
        trim_heap()
        t4, f4 = time.monotonic(), _major_faults()
        if from_copy and synced:
            shutil.rmtree(old.path)
            os.replace(self.next_spare_path, old.path)
            self.spare_valid = True
        elif from_copy:  # the old live dir stays as it was: the next cycle copies anew
            shutil.rmtree(self.next_spare_path, ignore_errors=True)
        self._drop_stale_logs()
        return {
            "load_s": t1 - t0,
            "catch_up_s": t2 - t1,
            "tail_s": t3 - t2,
            "close_s": t4 - t3,
            "drop_log_s": time.monotonic() - t4,
            "catch_up_points": caught_up,
            "tail_points": tail,
            # Pages this thread had to read from disk in each step: a swap that waits on
            # the disk (a page cache too small for the shards) shows here.
            "major_faults": {
                "load": f1 - f0,
                "catch_up": f2 - f1,
                "tail": f3 - f2,
                "close": f4 - f3,
            },
        }

    def close(self) -> None:
        try:
            with self._write_lock:
                self._live.shard.flush()
                self._live.shard.close()
                if self._log_fh is not None:
                    self._log_fh.flush()
                    os.fsync(self._log_fh.fileno())
                    self._log_fh.close()
                    self._log_fh = None
                    self._write_state(spare_valid=self.spare_valid)
        finally:
            os.close(self._lock_fd)
        trim_heap()
