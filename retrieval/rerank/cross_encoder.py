"""A sentence-transformers CrossEncoder the operator brings, as a reranker.

No cross-encoder ships in a package that installs offline here, so the model is a folder
(FRESHRAG_RERANKER=cross-encoder:/models/ms-marco-MiniLM-L-6-v2), loaded with no hub
access. Each (query, candidate) pair is read together, which is what makes a
cross-encoder sharper than comparing two embeddings, and what makes it cost a model pass
per candidate: the candidates go in one batch, cut to `max_tokens` word pieces a pair.
"""

from __future__ import annotations

import threading
from pathlib import Path

from retrieval.rerank.base import by_scores, passage
from retrieval.store.types import SearchHit

# Characters kept of a candidate before tokenising, per word piece allowed: tokenising
# text the model would cut anyway costs time (English averages about 4 characters a
# piece; 6 leaves room for short words and markup).
_CHARS_PER_TOKEN = 6


class CrossEncoderReranker:
    name = "cross-encoder"

    def __init__(self, folder: str | Path, max_tokens: int = 160, threads: int = 1) -> None:
        """`threads`: batches scored at once (each request waits for its turn); each
        runs on the process's torch threads (one while the API serves queries)."""
        from sentence_transformers import CrossEncoder

        path = Path(folder).expanduser()
        if not path.is_dir():
            raise ValueError(f"FRESHRAG_RERANKER: no cross-encoder folder at {path}")
        self.max_tokens = max_tokens
        self._model = CrossEncoder(
            str(path), device="cpu", local_files_only=True, max_length=max_tokens
        )
        self._turns = threading.BoundedSemaphore(threads)

    def scores(self, query: str, hits: list[SearchHit]) -> list[float]:
        """The model's score of each candidate for `query`, in the order given."""
        if not hits:
            return []
        pairs = [(query, passage(h, self.max_tokens * _CHARS_PER_TOKEN)) for h in hits]
        with self._turns:
            out = self._model.predict(
                pairs, batch_size=len(pairs), show_progress_bar=False, convert_to_numpy=True
            )
        return [float(s) for s in out]

    def rerank(self, query: str, hits: list[SearchHit], deadline: float | None) -> list[SearchHit]:
        """Local and bounded by the candidates: `deadline` is not needed."""
        return by_scores(hits, self.scores(query, hits))
