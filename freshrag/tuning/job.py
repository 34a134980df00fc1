"""One tune at a time, in a niced child, its progress readable and its end clean.

The service process reads the chunks (it owns the embedded index) and mines the pairs;
the training runs in `python -m freshrag.tuning.train`, so a crash, a kill or a full CPU
there never touches serving. A file lock under the data dir keeps a second tune out, also
from another process on the same data dir. The result appears under
`<data_dir>/models/tuned/<name>` only when complete (the child renames it into place);
nothing here changes which model serves: `freshrag reindex --model` does, after the
evaluation says so.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from freshrag.broker_store import end_process
from freshrag.errors import TuneError
from freshrag.settings import Settings
from freshrag.tuning.corpus import Corpus, TuneInputError, read_corpus
from freshrag.tuning.pairs import count_kinds, mine_pairs
from freshrag.tuning.train import TuneSpec
from freshrag.tuning.yielding import YieldToServing
from ingest.chunker import Chunker
from retrieval.encoders import model_label

log = logging.getLogger(__name__)

MIN_PAIRS = 256  # eight batches: below this the index is too small to learn anything from


class TuneBusy(TuneError):
    """A tune is running already (here or in another process on this data dir)."""


def tuned_root(settings: Settings) -> Path:
    return settings.data_dir / "models" / "tuned"


def _name(base: str) -> str:
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", model_label(base)).strip("-") or "model"
    return f"{label}-tuned-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"


class TuneJob:
    """`start`, `status`, `cancel`; `close` at shutdown. Thread-safe."""

    def __init__(
        self,
        settings: Settings,
        serving: Callable[[], tuple[Any, str]],
        busy: Callable[[], bool] | None = None,
    ) -> None:
        self.settings = settings
        self._serving = serving  # () → the serving generation's (index, model), at start
        # () → whether this process is serving queries or indexing edits right now: the
        # training process is held stopped meanwhile (FRESHRAG_TUNE_YIELD).
        self._busy = busy
        self._yield: YieldToServing | None = None
        self._lock = threading.Lock()
        self._lock_file: Any = None
        self._child: subprocess.Popen | None = None
        self._state: dict[str, Any] = {"state": "idle"}
        self._work: Path | None = None
        self._cancelled = False

    # --- the lock ---------------------------------------------------------------------
    def _acquire(self) -> None:
        root = tuned_root(self.settings)
        root.mkdir(parents=True, exist_ok=True)
        handle = open(root / ".tune.lock", "a+")  # noqa: SIM115 (held for the whole job)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise TuneBusy(f"a tune is already running (process {holder})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def _release(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    # --- the job ----------------------------------------------------------------------
    def start(
        self, tenant: str | None, steps: int | None = None, max_seconds: float | None = None
    ) -> dict[str, Any]:
        """Reads the chunks of `tenant` (None: every tenant) and mines pairs here
        (seconds), then starts the child; `steps` and `max_seconds` default to the
        settings'. Raises TuneBusy, or TuneInputError when the scope cannot make a tune."""
        with self._lock:
            if self._child is not None and self._child.poll() is None:
                raise TuneBusy("a tune is already running")
            self._acquire()
            try:
                return self._start(tenant, steps or self.settings.tune_steps, max_seconds)
            except BaseException:
                self._release()
                raise

    def _start(self, tenant: str | None, steps: int, max_seconds: float | None) -> dict[str, Any]:
        s = self.settings
        index, model = self._serving()
        corpus = read_corpus(index, tenant)
        if not corpus.documents:
            where = "any tenant" if tenant is None else f"tenant {tenant!r}"
            raise TuneInputError(f"nothing is indexed for {where}: index documents first")
        chunker = Chunker(s.chunk_size, s.chunk_overlap, headers=s.chunk_headers, model=s.model)
        limit = steps * s.tune_batch_size
        pairs = mine_pairs(corpus.documents, chunker.header_of, limit=limit, seed=0)
        if len(pairs) < min(MIN_PAIRS, limit):
            raise TuneInputError(
                f"too little to learn from: {len(corpus.documents)} documents "
                f"({corpus.chunks} chunks) gave {len(pairs)} training pairs, and a tune "
                f"needs at least {min(MIN_PAIRS, limit)}; index more documents first"
            )
        name = _name(model)
        root = tuned_root(s)
        work = root / f".work-{name}"
        work.mkdir(parents=True)
        with open(work / "pairs.jsonl", "w") as f:
            for p in pairs:
                f.write(json.dumps({"anchor": p.anchor, "positive": p.positive, "kind": p.kind}))
                f.write("\n")
        spec = TuneSpec(
            base_model=model,
            pairs_file=str(work / "pairs.jsonl"),
            out_dir=str(root / name),
            progress_file=str(work / "progress.json"),
            steps=steps,
            max_seconds=max_seconds or s.tune_max_seconds,
            batch_size=s.tune_batch_size,
            learning_rate=s.tune_learning_rate,
            keep=s.tune_keep,
            threads=s.tune_threads,
            nice=s.tune_nice,
            idle=s.tune_idle,
            paused_file=str(work / "paused.json"),
            card=self._card(corpus, model),
        )
        spec.dump(work / "spec.json")
        self._child = self._spawn(work)
        if s.tune_yield and self._busy is not None:
            self._yield = YieldToServing(self._child.pid, self._busy, work / "paused.json").start()
        self._work, self._cancelled = work, False
        self._state = {
            "state": "training",
            "name": name,
            "model": spec.out_dir,
            "scope": corpus.scope,
            "documents": len(corpus.documents),
            "chunks": corpus.chunks,
            "pairs": len(pairs),
            "kinds": count_kinds(pairs),
            "steps": steps,
            "step": 0,
            "max_seconds": spec.max_seconds,
            "started_at": time.time(),
        }
        log.info(
            "tune %s: %d pairs from %s, child %d", name, len(pairs), corpus.scope, self._child.pid
        )
        return dict(self._state)

    def _spawn(self, work: Path) -> subprocess.Popen:
        """The training process, started from a thread of its own that then follows it to
        its end: Linux ties the child's die-with-parent signal to the thread that started
        it, and a request's worker thread ends long before a tune does."""
        handed: queue.Queue[subprocess.Popen | BaseException] = queue.Queue(maxsize=1)

        def run() -> None:
            try:
                with open(work / "train.log", "wb") as log_file:
                    child = subprocess.Popen(
                        [sys.executable, "-m", "freshrag.tuning.train", str(work / "spec.json")],
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # a Ctrl-C at the server's terminal is its own
                    )
            except BaseException as exc:
                handed.put(exc)
                return
            handed.put(child)
            self._follow(child, work)

        threading.Thread(target=run, name="tune-child", daemon=True).start()
        got = handed.get()
        if isinstance(got, BaseException):
            raise got
        return got

    def _card(self, corpus: Corpus, model: str) -> dict[str, Any]:
        return {
            "base_label": model_label(model),
            "scope": corpus.scope,
            "documents": len(corpus.documents),
            "chunks": corpus.chunks,
        }

    def _progress(self, work: Path) -> dict[str, Any]:
        try:
            return json.loads((work / "progress.json").read_text())
        except (OSError, ValueError):
            return {}

    def _follow(self, child: subprocess.Popen, work: Path) -> None:
        code = child.wait()
        with self._lock:  # after `_start` has recorded the tune, however fast the child
            held = self._stop_yielding()
            progress = self._progress(work)
            if self._cancelled:
                state = {"state": "cancelled"}
            elif code == 0 and progress.get("state") == "done":
                state = {"state": "done"}
            else:
                tail = (work / "train.log").read_text(errors="replace")[-2000:]
                error = progress.get("error") or f"the training process exited with {code}"
                state = {"state": "failed", "error": error}
                log.error("tune %s failed: %s\n%s", self._state.get("name"), error, tail)
            self._state.update(
                state,
                step=progress.get("step", self._state.get("step", 0)),
                seconds=progress.get("seconds"),
                ended_at=time.time(),
            )
            if held:
                self._state.update(paused=False, paused_s=round(held, 1))
            if state["state"] != "done":  # a killed child leaves its half-written folder
                shutil.rmtree(self._state.pop("model") + ".partial", ignore_errors=True)
            shutil.rmtree(work, ignore_errors=True)
            self._work = None
            self._child = None
            self._release()

    def status(self) -> dict[str, Any]:
        with self._lock:
            state = dict(self._state)
            if self._work is not None and state["state"] == "training":
                progress = self._progress(self._work)
                state["step"] = progress.get("step", 0)
                state["seconds"] = progress.get("seconds", 0.0)
                if progress.get("state") == "saving":
                    state["state"] = "saving"
                pacer = self._yield
                if pacer is not None:
                    state["paused"] = pacer.paused  # held while the service works
                    state["paused_s"] = round(pacer.paused_s, 1)
            return state

    def _stop_yielding(self) -> float:
        """Stops pacing the child (continued: a stopped process would not act on
        SIGTERM); the seconds it was held."""
        pacer, self._yield = self._yield, None
        if pacer is None:
            return 0.0
        pacer.stop()
        return pacer.paused_s

    @property
    def pid(self) -> int | None:
        """The training process while one runs (to watch what it costs the machine)."""
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def cancel(self) -> dict[str, Any]:
        """Stops a running tune; nothing of it is kept."""
        with self._lock:
            child = self._child
            if child is None or child.poll() is not None:
                return dict(self._state)
            self._cancelled = True
        self._stop_yielding()
        end_process(child, 10.0)
        for _ in range(100):  # `_follow` records the end
            if self._child is None:
                break
            time.sleep(0.05)
        return self.status()

    def close(self) -> None:
        """At shutdown: a running tune is stopped (its partial folder removed)."""
        if self._child is not None:
            self.cancel()
