"""What every benchmark needs: a free port, percentiles, the machine's load, and JSON out."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def machine() -> dict:
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def write(result: dict, out: Path) -> None:
    result["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    result.setdefault("machine", machine())
    print(json.dumps(result, indent=2), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


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
    import threading

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
