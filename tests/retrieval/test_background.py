"""Background processes go with the service: a child that called `die_with_parent` is
killed when its parent dies, even while it is stopped (a held tune)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG"),
]

GRANDCHILD = (
    "import os, signal, time\n"
    "from retrieval.background import die_with_parent\n"
    "die_with_parent()\n"
    "os.kill(os.getpid(), signal.SIGSTOP)\n"
    "time.sleep(60)\n"
)
PARENT = (
    "import subprocess, sys, time\n"
    f"p = subprocess.Popen([sys.executable, '-c', {GRANDCHILD!r}])\n"
    "print(p.pid, flush=True)\n"
    "time.sleep(60)\n"
)


def state(pid: int) -> str | None:
    """R, S, T (stopped), Z (dead, not reaped), or None (gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


def wait_for(check, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_stopped_child_dies_with_its_parent():
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        child = int(parent.stdout.readline())
        wait_for(lambda: state(child) == "T")  # stopped, as a held tune is
    finally:
        parent.kill()
        parent.wait()
    wait_for(lambda: state(child) in (None, "Z"))
