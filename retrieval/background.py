"""What the service's background processes (the ingest children, the Edge optimiser, the
tune's training) do first: go beneath serving, and go with it.

Its own module, with nothing heavy: a child calls it before importing anything else, so
that even its imports run beneath serving.
"""

from __future__ import annotations

import os


def lower_priority(nice: int, idle: bool = False) -> None:
    """Give the calling thread (and the threads it starts later) a smaller CPU share.

    A niceness keeps a guaranteed share under any load (CFS weights: nice 5 gets about
    a quarter of a core beside one busy nice-0 thread); SCHED_IDLE (`idle`) gets a core
    only when nothing else wants one, so a busy neighbour stops the work for good.
    Otherwise the policy is SCHED_BATCH: same weights, but a child that wakes with work
    does not preempt a running query thread (a sleeper's wake-up credit would let it,
    whatever its niceness); it waits for the next tick. On Linux both are per thread:
    call this before a child starts its worker threads (torch's OpenMP pool), so they
    inherit it.
    """
    if nice:
        os.nice(nice)
    if idle and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif hasattr(os, "SCHED_BATCH"):
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))


def die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies (a child stopped or busy
    would otherwise outlive a killed service). Linux counts the *thread* that started it
    as the parent: start such a child from a thread that outlives it (the Edge optimiser's
    loop, the tune's own follower thread), never from a request's worker thread."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the parent ends its children when it closes
        pass
