"""bench.scale's material: points with the structure of real chunks, and the queries.

Real Django doc chunks embedded with MiniLM (once, in a child process, cached under
data/samples), each point a noisy mix of two of them, its text and BM25 terms those of its
main chunk. Run as a module only by `Material`, to embed: `python -m bench._scale_material
TEXTS_JSON OUT_NPZ`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

from bench.harness import SAMPLES, child_env, module_command
from freshrag.settings import Settings
from ingest.sample import django_docs, doc_files
from retrieval.encoders import DenseEncoder, SparseEncoder
from retrieval.store.types import ChunkPoint, SparseVec

TENANTS = 4


def chunk_texts(limit: int) -> list[str]:
    """Django doc paragraphs packed into ~1,000-character chunks (what the chunker makes)."""
    docs = django_docs(Settings().sample_django_version, SAMPLES)
    out: list[str] = []
    for path in doc_files(docs):
        buf = ""
        for para in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            para = para.strip()
            if not para or set(para) <= set("=-~*^#"):
                continue
            buf = f"{buf}\n\n{para}" if buf else para
            if len(buf) >= 800:
                out.append(buf[:1500])
                buf = ""
        if len(out) >= limit:
            break
    return out[:limit]


def embed(texts: list[str], query_texts: list[str], cache: Path) -> None:
    """MiniLM vectors of the chunks and queries into `cache` (run in a child process, so
    torch and the model never count in the RSS this benchmark reports)."""
    dense = DenseEncoder("all-MiniLM-L6-v2", batch_size=64)
    np.savez(
        cache,
        vectors=np.asarray(dense.encode(texts), dtype=np.float32),
        queries=np.asarray(dense.encode(query_texts), dtype=np.float32),
    )


class Material:
    """Base chunk texts, their MiniLM vectors and BM25 terms, and the queries."""

    def __init__(self, base: int, queries: int) -> None:
        texts = chunk_texts(base + queries)
        if len(texts) < base + queries:
            raise SystemExit(f"only {len(texts)} chunks in the Django docs")
        self.texts, held_out = texts[:base], texts[base:]
        query_texts = [" ".join(t.split()[:12]) for t in held_out]
        digest = hashlib.sha256("\x00".join(texts + query_texts).encode()).hexdigest()[:16]
        cache = SAMPLES / f"scale-minilm-{digest}.npz"
        t0 = time.monotonic()
        if not cache.exists():
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp.npz")
            with tempfile.NamedTemporaryFile("w", suffix=".json") as fh:
                json.dump({"texts": self.texts, "queries": query_texts}, fh)
                fh.flush()
                subprocess.run(
                    module_command(__name__, fh.name, str(tmp)), env=child_env(), check=True
                )
            os.replace(tmp, cache)
        saved = np.load(cache)
        self.vectors = saved["vectors"]
        self.query_vectors = [list(map(float, v)) for v in saved["queries"]]
        self.dim = int(self.vectors.shape[1])
        sparse = SparseEncoder()
        self.sparse = sparse.encode_documents(self.texts)
        self.query_sparse = [sparse.encode_query(q) for q in query_texts]
        self.embed_s = time.monotonic() - t0

    def points(self, start: int, n: int, rng: np.random.Generator) -> list[ChunkPoint]:
        """Points start..start+n: a mix of two base chunks plus noise, normalised."""
        ids = np.arange(start, start + n)
        main = ids % len(self.texts)
        other = (ids * 7919 + 13) % len(self.texts)
        v = self.vectors[main] + 0.3 * self.vectors[other]
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        v += rng.normal(0, 0.032, v.shape).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        out = []
        for row, i, b in zip(v.tolist(), ids.tolist(), main.tolist(), strict=True):
            sp = self.sparse[b]
            out.append(
                ChunkPoint(
                    str(uuid.UUID(int=i + 1)),
                    row,
                    SparseVec(sp.indices, sp.values),
                    {
                        "tenant": f"t{i % TENANTS}",
                        "acl": ["sales"] if i % 5 == 0 else ["public"],
                        "doc_id": f"doc-{i // 12}",
                        "version": 1 + i % 3,
                        "chunk_index": i % 12,
                        "hash": f"h{i:08d}",
                        "title": f"Django doc {b}",
                        "text": self.texts[b],
                        "indexed_at": "2026-01-01T00:00:00Z",
                    },
                )
            )
        return out


def warmup_queries(m: Material, n: int) -> tuple[list[list[float]], list[SparseVec]]:
    """Traffic that is not the measured queries, to bring a restarted process to its
    steady state: near a random base chunk (as the points are), its opening words as the
    keyword side. Warming with the measured queries themselves would cache exactly the
    pages they read."""
    rng = np.random.default_rng(7)
    picks = rng.integers(0, len(m.texts), n)
    v = m.vectors[picks] + 0.3 * m.vectors[rng.integers(0, len(m.texts), n)]
    v += rng.normal(0, 0.05, v.shape).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    sparse = SparseEncoder()
    return v.tolist(), [sparse.encode_query(" ".join(m.texts[b].split()[:12])) for b in picks]


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    embed(spec["texts"], spec["queries"], Path(sys.argv[2]))
