"""Semantic answer cache that knows when documents change.

Entries are keyed by the question's embedding and scoped by everything that shapes an
answer: tenant, caller groups, prompt version, provider chain, filters, mode and top_k.
A hit needs cosine similarity above a conservative threshold, an unexpired entry, and
every cited document still at the cited version in the documents registry; otherwise the
entry is evicted and the question answered afresh.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from retrieval.index import Index

LOOKUPS = Counter("freshrag_answer_cache_lookups_total", "Answer cache lookups", ["result"])


def cache_scope(**parts: Any) -> str:
    """A stable digest of everything that must match for an answer to be reused."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class AnswerCache:
    def __init__(
        self, index: Index, threshold: float, ttl_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.index, self.threshold, self.ttl_s, self.clock = index, threshold, ttl_s, clock

    def get(self, vector: list[float], scope: str) -> dict[str, Any] | None:
        hit = self.index.cache_search(vector, scope, self.clock(), self.threshold)
        if hit is None:
            LOOKUPS.labels("miss").inc()
            return None
        for cited in hit.payload.get("cited", []):
            state = self.index.get_document(cited["tenant"], cited["doc_id"])
            if state is None or state.deleted or state.version != cited["version"]:
                self.index.cache_delete([hit.id])
                LOOKUPS.labels("stale").inc()
                return None
        LOOKUPS.labels("hit").inc()
        return {**hit.payload["answer"], "cache_similarity": round(hit.score, 4)}

    def put(
        self, vector: list[float], scope: str, answer: dict[str, Any], cited: list[dict[str, Any]]
    ) -> None:
        now = self.clock()
        self.index.cache_put(
            str(uuid.uuid4()),
            vector,
            {
                "scope": scope,
                "created_at": now,
                "expires_at": now + self.ttl_s,
                "answer": answer,
                "cited": cited,
            },
        )
