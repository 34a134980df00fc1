"""The optimiser: a background thread that runs one child process per cycle."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from retrieval.store.edge import rebuild
from retrieval.store.edge.shards import ChunkShards
from retrieval.store.edge.tuning import EdgeTuning

log = logging.getLogger("retrieval.edge")  # the name it logged under as one module

_CHILD = "retrieval.store.edge.child"  # run as `python -m`
_TICK_S = 2.0
# A flush holds the GIL for its whole length, 20-26 ms even after single edits (the fsyncs;
# a one-off timing, not a benchmark), and every query in flight waits for it: at 2 edits/s
# a flush every 2 s reaches an estimated 1.5 % of queries, their p99. The WAL already makes each write durable, so the live shard
# is flushed only once enough has piled up for a swap's close to take long, or when the
# oldest unflushed write is this old.
_FLUSH_POINTS = 2000
_FLUSH_MAX_AGE_S = 30.0
# The checkout this code runs from, for the child's PYTHONPATH (…/retrieval/store/edge/).
_SOURCE_ROOT = Path(__file__).resolve().parents[3]


class OptimizerStopped(Exception):
    """The index was closed while a cycle ran; the spare is rebuilt on the next start."""


class EdgeOptimizer:
    """Keeps the chunks shard optimised without holding this process's GIL for long.

    A cycle starts after `optimize_after_points` written points, or `optimize_interval_s`
    after the last cycle when anything was written; never two at once. The child loads
    the spare, replays the op log, runs `optimize()` (HNSW on sealed segments, merges,
    vacuum of deleted points), replays what arrived meanwhile, closes the spare and warms
    its files; then `ChunkShards.swap` makes it live here.
    """

    def __init__(self, store: ChunkShards, tuning: EdgeTuning, dense_dim: int) -> None:
        self.store = store
        self.tuning = tuning
        self.dense_dim = dense_dim
        self.cycles = 0
        self.last: dict[str, Any] = {}
        self.last_error: str | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._requested = 0
        self._finished = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._retry_after = 0.0
        store.on_write = self._poke
        self._thread = threading.Thread(target=self._run, name="edge-optimizer", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._proc is not None

    def _poke(self) -> None:
        if self.store.pending >= self.tuning.optimize_after_points:
            with self._cond:
                self._cond.notify_all()

    def request(self, wait: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """Runs a cycle now (after the one in progress, if any); with `wait`, returns its stats."""
        with self._cond:
            self._requested += 1
            ticket = self._requested
            self._cond.notify_all()
            if wait:
                self._cond.wait_for(
                    lambda: self._finished >= ticket or self._stopping, timeout=timeout
                )
            return dict(self.last)

    def _due(self, last_end: float) -> tuple[bool, float]:
        now = time.monotonic()
        if self._requested > self._finished:
            return True, 0.0
        if now < self._retry_after:
            return False, self._retry_after - now
        pending = self.store.pending
        if pending >= self.tuning.optimize_after_points:
            return True, 0.0
        wait = last_end + self.tuning.optimize_interval_s - now
        return (pending > 0 and wait <= 0), min(max(wait, 0.1), _TICK_S)

    def _run(self) -> None:
        last_end = time.monotonic()
        while True:
            with self._cond:
                due, wait = self._due(last_end)
                if not due and not self._stopping:
                    self._cond.wait(timeout=wait)
                    due, _ = self._due(last_end)
                if self._stopping:
                    return
                ticket = self._requested
            self._flush()
            if not due:
                continue
            try:
                self.last = self._cycle()
                self.cycles += 1
                self.last_error = None
            except OptimizerStopped:
                return
            except Exception as exc:  # keep serving from the live shard; retry later
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._retry_after = time.monotonic() + self.tuning.optimize_interval_s
                log.exception("edge optimiser cycle failed; the live shard keeps serving")
            finally:
                last_end = time.monotonic()
                with self._cond:
                    self._finished = max(self._finished, ticket)
                    self._cond.notify_all()

    def _cycle(self) -> dict[str, Any]:
        store = self.store
        t0 = time.monotonic()
        copy_s = 0.0
        if not store.spare_valid:
            copy_s = store.make_spare()
        store.spare_valid = False  # the child is about to change it
        from_copy = store.spare_from_child()
        command = {
            "dir": str(store.spare_path),
            "log": str(store.log_path),
            "dim": self.dense_dim,
            "tuning": asdict(self.tuning),
            "copy_to": str(store.next_spare_path) if from_copy else None,
            "step": rebuild.REPLAY_STEP,
        }
        env = dict(os.environ)
        src = str(_SOURCE_ROOT)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        with self._cond:
            if self._stopping:
                raise OptimizerStopped
            self._proc = subprocess.Popen(
                [sys.executable, "-m", _CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
        try:
            message: bytes | None = json.dumps(command).encode()
            while True:  # the live shard keeps taking writes: keep flushing it meanwhile
                try:
                    out, _ = self._proc.communicate(message, timeout=_TICK_S)
                    break
                except subprocess.TimeoutExpired:
                    message = None
                    self._flush()
            code = self._proc.returncode
        finally:
            with self._cond:
                self._proc = None
        if self._stopping:
            raise OptimizerStopped
        lines = out.decode(errors="replace").strip().splitlines()
        reply = json.loads(lines[-1]) if lines else {}
        if code != 0 or not reply.get("ok"):
            raise RuntimeError(f"optimiser child exited {code}: {reply.get('error', out[-500:])}")
        t1 = time.monotonic()
        pauses = store.swap(reply["offset"], from_copy)
        return {
            "copy_s": copy_s,
            "child_s": t1 - t0 - copy_s,
            "total_s": time.monotonic() - t0,
            **{
                k: reply[k]
                for k in (
                    "optimize_s",
                    "warm_s",
                    "replayed_points",
                    "child_peak_rss_mb",
                    "child_rss_anon_mb",
                    "child_copy_s",
                    "rebuilt",
                )
            },
            "spare_from_child": from_copy,
            **pauses,
        }

    def _flush(self) -> None:
        """Flushes the live shard once its unflushed writes are many or old (see above)."""
        store = self.store
        if not store.dirty:
            return
        old = time.monotonic() - store.dirty_since >= _FLUSH_MAX_AGE_S
        if not old and store.dirty < _FLUSH_POINTS:
            return
        try:
            store.flush()
        except Exception:
            log.exception("edge: flushing the chunks shard failed")

    def close(self, timeout: float = 30.0) -> None:
        """Stops the thread; a running child is killed (its spare is then rebuilt on start)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            proc = self._proc
        if proc is not None:
            proc.kill()
        self._thread.join(timeout)
