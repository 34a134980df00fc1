"""The README's start command (`make up`) comes up on embedded defaults and answers /retrieve."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.broker
@pytest.mark.model
@pytest.mark.slow
def test_make_up_serves_the_django_sample(tmp_path):
    port, kafka = free_port(), free_port()
    env = dict(
        os.environ,
        FRESHRAG_DATA_DIR=str(tmp_path / "data"),
        FRESHRAG_PORT=str(port),
        FRESHRAG_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{kafka}",
        FRESHRAG_SAMPLE_LIMIT="60",
    )
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "up"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # bytes, not text: text mode would turn a progress bar's \r into \n
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode("utf-8", "replace")
            if not line and proc.poll() is not None:
                pytest.fail("freshrag up exited early:\n" + "".join(lines[-40:]))
            lines.append(line)
            if "sample indexed:" in line:
                break
        out = "".join(lines)
        assert "FreshRAG is up." in out, out[-3000:]
        key = re.search(r"API key\s+(\S+)", out).group(1)
        assert f"curl -s http://127.0.0.1:{port}/retrieve" in out

        r = httpx.post(
            f"http://127.0.0.1:{port}/retrieve",
            headers={"Authorization": f"Bearer {key}"},
            json={"query": "How do I deploy Django with Gunicorn?", "top_k": 3},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        hits = r.json()["hits"]
        assert hits and hits[0]["doc_id"].startswith("django/howto/deployment")
        assert hits[0]["version"] == 50208
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").json()["ready"] is True
        answer = httpx.post(
            f"http://127.0.0.1:{port}/answer",
            headers={"Authorization": f"Bearer {key}"},
            json={"query": "How do I run Django with Gunicorn?"},
            timeout=60,
        ).json()
        assert answer["provider"] == "extractive" and answer["citations"], answer
        assert answer["citations"][0]["doc_id"].startswith("django/")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    rest = proc.stdout.read().decode("utf-8", "replace")
    # make itself dies of the signal (-15); the service below it must shut down cleanly.
    assert "bye" in rest and "Traceback" not in rest, rest[-3000:]
    # Output to a pipe (a log file, CI) carries no progress bars: each would be one endless
    # carriage-return line.
    assert "\r" not in out + rest, repr((out + rest)[:2000])
