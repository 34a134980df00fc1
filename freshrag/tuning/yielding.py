"""A tune that steps aside while the service works: the training process is stopped
(SIGSTOP) while the process that started it serves queries or indexes edits, and
continued (SIGCONT) once it has been quiet for a moment.

Scheduling alone does not give that: on the 2-core machines we measured
(bench/results/tune_load.json), a training process at niceness 10 or under SCHED_IDLE
still made hybrid `/retrieve` 1.5-1.9x slower and edits' lag about twice as long, from
what the two share below the scheduler (caches, memory bandwidth, the host's cores).
A stopped process shares nothing. The cost is the tune's: it trains in the service's
quiet moments only, and its time budget counts the time it ran, not the time it waited
(the paused seconds go to `paused_file`, which the training process reads).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


def paused_seconds(path: str) -> float:
    """What a `YieldToServing` wrote to `path` (0 if nothing yet)."""
    try:
        return float(json.loads(Path(path).read_text())["paused_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


class RunningClock:
    """Seconds the training process ran since the clock was made: the time the service
    held it stopped (what `paused_file` says) is left out, so a budget counts training."""

    def __init__(self, paused_file: str) -> None:
        self.paused_file = paused_file
        self._start = time.monotonic()
        self._held = self._paused()

    def _paused(self) -> float:
        return paused_seconds(self.paused_file) if self.paused_file else 0.0

    def seconds(self) -> float:
        return time.monotonic() - self._start - (self._paused() - self._held)


class YieldToServing:
    """Stops process `pid` while `busy()`, continues it when not; `stop()` continues it
    for good (before it is terminated: a stopped process does not act on SIGTERM)."""

    def __init__(
        self, pid: int, busy: Callable[[], bool], paused_file: Path, poll_s: float = 0.02
    ) -> None:
        self.pid, self.busy, self.paused_file, self.poll_s = pid, busy, paused_file, poll_s
        self.pauses = 0
        # A pidfd names this process and no later one that takes its pid once it is gone
        # (Linux 5.3+; elsewhere the pid, which the parent holds until it reaps it).
        self._pidfd: int | None = None
        self._gone = False
        if hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._gone = True
            except OSError:  # an older kernel
                pass
        self._paused_s = 0.0
        self._since: float | None = None  # when the current pause began
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tune-yield", daemon=True)

    def start(self) -> YieldToServing:
        self._thread.start()
        return self

    @property
    def paused(self) -> bool:
        return self._since is not None

    @property
    def paused_s(self) -> float:
        with self._lock:
            ongoing = time.monotonic() - self._since if self._since is not None else 0.0
            return self._paused_s + ongoing

    def _signal(self, sig: signal.Signals) -> bool:
        if self._gone:
            return False
        try:
            if self._pidfd is not None:
                signal.pidfd_send_signal(self._pidfd, sig)
            else:
                os.kill(self.pid, sig)
            return True
        except (ProcessLookupError, OSError):  # ended: nothing left to pace
            self._gone = True
            return False

    def _pause(self) -> bool:
        with self._lock:
            self._since = time.monotonic()
            self.pauses += 1
        return self._signal(signal.SIGSTOP)

    def _resume(self) -> bool:
        with self._lock:
            if self._since is None:
                return True
            self._paused_s += time.monotonic() - self._since
            self._since = None
            total = self._paused_s
        # Written before the child runs again, so its next look at the clock sees it.
        tmp = self.paused_file.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps({"paused_s": total, "pauses": self.pauses}))
            tmp.replace(self.paused_file)
        except OSError:  # the tune's work dir is gone: it has ended
            pass
        return self._signal(signal.SIGCONT)

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.poll_s):
                busy = self.busy()
                if busy and not self.paused:
                    alive = self._pause()
                elif not busy and self.paused:
                    alive = self._resume()
                else:
                    continue
                if not alive:
                    return
        except Exception:  # never leave the child stopped because the check failed
            log.exception("pausing the tune for serving failed; it runs unpaced from now")
        finally:
            self._resume()

    def stop(self) -> None:
        """Continues the process and stops pacing it."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)
        self._resume()
        with self._lock:
            fd, self._pidfd, self._gone = self._pidfd, None, True
        if fd is not None:
            os.close(fd)
