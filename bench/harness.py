"""What every benchmark needs: a free port, percentiles, the machine's load, and JSON out."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


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
