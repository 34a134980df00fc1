"""The embedded broker's disk: a loopback S3 server that Tansu keeps its log in.

The bundled Tansu build stores in memory or in S3 only (no SQLite, no PostgreSQL), so a
single-machine `freshrag up` that must keep what producers were told was accepted gives
it an S3 bucket on local disk: alocals3 (PyPI), which writes each object with fsync and
an atomic rename and keeps its metadata in SQLite (WAL), and honours the conditional PUTs
(If-None-Match / If-Match) Tansu's compare-and-swap needs. Tansu answers a produce only
after its object store answered the PUT, so an acknowledged event is on disk: a kill -9
of the whole stack loses nothing acknowledged (tests/freshrag/test_durable_broker.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

BUCKET = "tansu"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _request(method: str, url: str, timeout: float = 1.0) -> int:
    req = urllib.request.Request(url, method=method)  # noqa: S310 (loopback http only)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def end_process(proc: subprocess.Popen | None, timeout_s: float) -> None:
    """SIGTERM, then SIGKILL if it is still there after `timeout_s` (the broker and its
    object store stop alike)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()


class DiskObjectStore:
    """alocals3 on a free loopback port with its bucket under `root`, for one Tansu."""

    def __init__(self, root: Path, log_path: Path | None = None, host: str = "127.0.0.1"):
        self.root, self.log_path, self.host = root, log_path, host
        self.port = 0
        self._proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}/s3"

    @property
    def storage_engine(self) -> str:
        return f"s3://{BUCKET}/"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ALOCALS3_STORAGE_ROOT": str(self.root),
            "ALOCALS3_DATABASE_URL": f"sqlite:///{self.root / 'meta.db'}",
            "ALOCALS3_LOG_LEVEL": "WARNING",
        }

    def tansu_env(self) -> dict[str, str]:
        """What Tansu's object_store client reads: this endpoint, plain http, any key
        (the server is on loopback and checks no signature, like the broker itself)."""
        return {
            **os.environ,
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "freshrag",
            "AWS_SECRET_ACCESS_KEY": "freshrag",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }

    def start(self, timeout: float = 30.0) -> DiskObjectStore:
        self.root.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        # Blobs an overwrite left behind (each metadata update writes a new one): reclaimed
        # before the server opens the store, so the disk holds the log, not its history.
        subprocess.run(
            [sys.executable, "-m", "alocals3.gc", "--apply"],
            env=self._env(),
            stdout=subprocess.DEVNULL,
            stderr=out,
            check=False,
            timeout=120,
        )
        self.port = _free_port(self.host)
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "alocals3.server",
                "--host",
                self.host,
                "--port",
                str(self.port),
            ],
            env=self._env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own group, which Tansu joins: the two stop together, after the worker.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if _request("GET", f"http://{self.host}:{self.port}/healthz", 0.5) == 200:
                    break
            except OSError:
                pass
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"the broker's object store exited with code {self._proc.returncode}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the broker's object store did not answer in {timeout}s")
            time.sleep(0.05)
        status = _request("PUT", f"{self.endpoint}/{BUCKET}", 5.0)
        if status not in (200, 201, 409):  # 409: the bucket is there from an earlier run
            self.stop()
            raise RuntimeError(f"could not create the broker's bucket (HTTP {status})")
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        end_process(self._proc, timeout_s)
        self._proc = None

    def kill(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
