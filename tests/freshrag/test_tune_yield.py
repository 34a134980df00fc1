"""A tune steps aside while the service works: a real process is held stopped while
`busy()` says so, runs again when it does not, and is never left stopped."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from freshrag.tuning.yielding import RunningClock, YieldToServing, paused_seconds

pytestmark = [
    pytest.mark.unit,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc"),
]


def state(pid: int) -> str:
    """R, S, T (stopped)... from /proc."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def wait_for(check, timeout: float = 5.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def child():
    proc = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.01)"])
    yield proc
    proc.kill()
    proc.wait()


def test_held_while_busy_and_continued_when_quiet(child, tmp_path: Path):
    busy = threading.Event()
    paused = tmp_path / "paused.json"
    pacer = YieldToServing(child.pid, busy.is_set, paused).start()
    try:
        time.sleep(0.1)
        assert state(child.pid) != "T" and not pacer.paused and pacer.paused_s == 0.0
        busy.set()
        wait_for(lambda: state(child.pid) == "T")
        assert pacer.paused and pacer.pauses == 1
        time.sleep(0.3)
        assert pacer.paused_s >= 0.3  # counted while it lasts
        busy.clear()
        wait_for(lambda: state(child.pid) != "T")
        assert not pacer.paused
        # The training process reads what it was held, to leave it out of its budget.
        assert paused_seconds(str(paused)) == pytest.approx(pacer.paused_s)
        assert pacer.paused_s >= 0.3
        busy.set()
        wait_for(lambda: state(child.pid) == "T")
        assert pacer.pauses == 2
    finally:
        pacer.stop()
    # Stopping the pacer continues the process, so a SIGTERM that follows is acted on.
    assert state(child.pid) != "T"
    child.terminate()
    assert child.wait(5) == -15
    assert paused_seconds(str(paused)) >= 0.3


def test_a_failing_check_never_leaves_the_process_stopped(child, tmp_path: Path):
    calls = []

    def busy() -> bool:
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("the check broke")
        return True

    pacer = YieldToServing(child.pid, busy, tmp_path / "paused.json").start()
    wait_for(lambda: len(calls) > 3)
    wait_for(lambda: state(child.pid) != "T")
    assert pacer.pauses == 1 and not pacer.paused
    pacer.stop()


def test_an_ended_process_ends_the_pacing(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    pacer = YieldToServing(proc.pid, lambda: True, tmp_path / "gone" / "paused.json").start()
    wait_for(lambda: not pacer._thread.is_alive())
    pacer.stop()  # nothing to continue, no work dir: no error


def test_paused_seconds_reads_nothing_as_zero(tmp_path: Path):
    assert paused_seconds(str(tmp_path / "absent.json")) == 0.0
    (tmp_path / "bad.json").write_text("{not json")
    assert paused_seconds(str(tmp_path / "bad.json")) == 0.0


def test_the_training_budget_leaves_out_the_time_held(tmp_path: Path):
    paused = tmp_path / "paused.json"
    paused.write_text('{"paused_s": 5.0}')  # held before this training began: not its own
    clock = RunningClock(str(paused))
    time.sleep(0.3)
    paused.write_text('{"paused_s": 5.2}')  # then held 0.2 s of these 0.3
    assert 0.09 <= clock.seconds() < 0.2
    assert RunningClock("").seconds() < 0.05  # no file: the wall time since it was made
