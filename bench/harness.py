"""What every benchmark needs: a free port, percentiles, the machine's load, JSON out with the
command that made it, and child processes that run this checkout's code."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shlex
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from freshrag.runtime import Core, ServerThread
    from ingest.events import DocumentEvent

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SAMPLES = ROOT / "data" / "samples"  # where `ingest.sample.django_docs` keeps the corpus


# Django questions the load generators ask (made distinct per request by their callers).
QUERIES = [
    "How do I deploy Django with Gunicorn?",
    "database transactions atomic",
    "How to write a custom template filter",
    "configure static files in production",
    "What is a QuerySet and when is it evaluated?",
    "form validation clean method",
    "timezone aware datetimes",
    "CSRF protection for AJAX requests",
    "migrations squash",
    "signals post_save receiver",
]


def free_port() -> int:
    """A port nothing listens on now, for a broker or server of this run."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


Method = Literal["nearest", "linear", "floor"]


def scratch_dir(prefix: str = "freshrag-bench-") -> Path:
    """A temporary data dir removed when the benchmark exits (an index, a broker's log:
    hundreds of MB a run); FRESHRAG_BENCH_KEEP=1 keeps it for a post-mortem."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    if os.environ.get("FRESHRAG_BENCH_KEEP") != "1":
        atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def pct(values: Sequence[float], p: float, method: Method = "nearest") -> float:
    """The `p`-th percentile (0-100) of `values`; 0.0 for no values.

    Three rules, each kept by the benchmark whose committed results were made with it, so
    new runs compare with old ones: `nearest`, the value at rank round(p·(n-1)) (the load
    generators); `linear`, numpy's interpolation between ranks (bench.scale); `floor`, the
    value at rank ⌊p·n⌋ (bench.parse's p95)."""
    if not values:
        return 0.0
    if method == "linear":
        import numpy as np

        return float(np.percentile(values, p))
    ordered = sorted(values)
    n = len(ordered)
    rank = int(p / 100 * n) if method == "floor" else int(round(p / 100 * (n - 1)))
    return ordered[min(n - 1, rank)]


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages: figures move with them, so results carry them."""
    return [round(x, 2) for x in os.getloadavg()]


def machine() -> dict:
    """The cores this process may use and the load: what a figure needs beside it."""
    return {"cpus": len(os.sched_getaffinity(0)), "loadavg": loadavg()}


def command() -> str:
    """How this run was started, as typed from the repository root (`.venv/bin/python -m
    bench.freshness --phases all`), so a results file says how to make it again."""
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        exe = exe.relative_to(ROOT)
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    how = ["-m", spec.name] if spec is not None else [sys.argv[0]]
    return shlex.join([str(exe), *how, *sys.argv[1:]])


def write(result: dict, out: Path, echo: bool = True) -> None:
    """`result` as JSON at `out`, with the command, the time and the machine (and on stdout
    unless `echo` is off: a large file written after each step of a long run)."""
    result.setdefault("command", command())
    result["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result.setdefault("machine", machine())
    if echo:
        print(json.dumps(result, indent=2), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def module_command(module: str, *args: str) -> list[str]:
    """A child process running `module` of this checkout (start it with `child_env()`)."""
    return [sys.executable, "-m", module, *args]


def child_env(root: Path = ROOT, **extra: str) -> dict[str, str]:
    """This environment with `root` first on PYTHONPATH, so a child runs that checkout's
    code whatever the venv's editable install points at (a worktree can be measured while
    main is edited), plus `extra`."""
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, **extra}


def django_events(docs: Path, files: list[Path]) -> list[DocumentEvent]:
    """Pages of the Django sample as version-1 reST events, named `django/<path>`: the same
    documents in every benchmark."""
    from ingest.publisher import build_events

    return build_events(files, root=docs, mime="text/x-rst", prefix="django/", version=1)


def sample_pages(
    version: str, n: int, then: int = 0
) -> tuple[Path, list[DocumentEvent], list[DocumentEvent]]:
    """The Django sample's docs folder (fetched once into data/samples), its first `n` pages
    as events (all of them for 0), and the `then` pages after those (a backfill)."""
    from ingest.sample import django_docs, doc_files

    docs = django_docs(version, SAMPLES)
    files = doc_files(docs, n + then)
    return docs, django_events(docs, files[:n]), django_events(docs, files[n:])


def index_pages(core: Core, events: list[DocumentEvent], desc: str = "indexing") -> None:
    """`events` written straight through the service's indexer (no broker), before any
    timing: the corpus a benchmark serves."""
    from tqdm import tqdm

    indexer = core.indexer()
    for i in tqdm(range(0, len(events), 32), desc=desc, unit="batch"):
        indexer.apply(events[i : i + 32])
    indexer.processor.close()


def serve(core: Core, keys: dict[str, dict]) -> ServerThread:
    """The API over `core` with these API keys on a free local port, started, in this
    process as `freshrag up` runs it; `.url` to call it, `.stop()` when done."""
    from api.app import create_app
    from api.auth import KeyStore
    from freshrag.runtime import ServerThread

    app = create_app(core.services(KeyStore(keys)))
    return ServerThread(app, "127.0.0.1", free_port()).start()


class WorkerThread:
    """The service's worker in a thread, ready before any timing starts (its child processes
    up, the model loaded, its partitions assigned), counting the chunks it embeds."""

    def __init__(self, core: Core) -> None:
        self.embedded = 0
        self.worker = core.worker(on_batch=self._count)
        self.worker.indexer.warm_up()  # child processes up and the model loaded: not timed
        self._thread = threading.Thread(target=self.worker.run, daemon=True)
        self._thread.start()
        while not self.worker.consumer.assignment():  # exclude the group join from the timing
            time.sleep(0.05)

    def _count(self, outcomes: list) -> None:
        self.embedded += sum(o.embedded for o in outcomes)

    def stop(self) -> None:
        self.worker.stop()
        self._thread.join(60)


def llama_minilm(encoder):  # noqa: ANN001, ANN201
    """A llama-index embedding over FreshRAG's own MiniLM encoder, counting the texts it embeds."""
    from llama_index.core.embeddings import BaseEmbedding

    class MiniLM(BaseEmbedding):
        calls: int = 0

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            self.calls += len(texts)
            return encoder.encode(texts)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._get_text_embeddings([text])[0]

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._get_text_embedding(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._get_query_embedding(query)

    return MiniLM(embed_batch_size=64)


def _query_client(url: str, key: str, mode: str, tag: str, deadline: float, out: list) -> None:
    import httpx

    i = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        while time.time() < deadline:
            # Distinct text per request, so the query-embedding cache flatters nothing.
            body = {"query": f"{QUERIES[i % len(QUERIES)]} ({tag} {id(out)} {i})", "mode": mode}
            t = time.perf_counter()
            try:
                ok = c.post("/retrieve", json=body).status_code == 200
            except httpx.HTTPError:
                ok = False
            out.append(((time.perf_counter() - t) * 1000, ok))
            i += 1


def _query_load(url: str, key: str, mode: str, clients: int, seconds: float, tag: str, q) -> None:  # noqa: ANN001
    deadline = time.time() + seconds
    results: list[list] = [[] for _ in range(clients)]
    threads = [
        threading.Thread(target=_query_client, args=(url, key, mode, tag, deadline, r))
        for r in results
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    q.put(([x for r in results for x in r], time.perf_counter() - started))


class QueryLoad:
    """`/retrieve` from `clients` concurrent clients in another process (as real callers
    are: the load generator's own CPU and GIL are not the server's), for `seconds`."""

    def __init__(
        self, url: str, key: str, clients: int, seconds: float, mode: str = "hybrid", tag: str = ""
    ) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._q = ctx.Queue()
        self._proc = ctx.Process(
            target=_query_load, args=(url, key, mode, clients, seconds, tag, self._q), daemon=True
        )
        self.clients = clients
        self._proc.start()

    def result(self) -> dict:
        """Latency percentiles (ms), throughput and errors, once the load has ended."""
        samples, wall = self._q.get()
        self._proc.join()
        lat = [ms for ms, ok in samples if ok]
        return {
            "clients": self.clients,
            "query_p50_ms": round(pct(lat, 50), 1),
            "query_p99_ms": round(pct(lat, 99), 1),
            "qps": round(len(lat) / wall, 1) if wall else 0.0,
            "query_errors": sum(1 for _, ok in samples if not ok),
        }


def _spin() -> None:
    while True:
        pass


class CpuHog:
    """One busy-looping process per core, at the service's own priority: a co-located
    CPU-bound job (started from the same session, so niceness compares directly)."""

    def __init__(self, processes: int | None = None) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        n = processes or len(os.sched_getaffinity(0))
        self._procs = [ctx.Process(target=_spin, daemon=True) for _ in range(n)]
        for p in self._procs:
            p.start()

    def stop(self) -> None:
        for p in self._procs:
            p.kill()
            p.join()

    def __enter__(self) -> CpuHog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
