"""Semantic answer cache that knows when documents change.

Entries are keyed by the question's embedding and scoped by everything that shapes an
answer: tenant, caller groups, prompt version, provider chain, filters, mode and top_k.
A hit needs cosine similarity above a conservative threshold, an unexpired entry, and
every cited document still at the cited version in the documents registry; otherwise the
entry is evicted and the question answered afresh.

Expired entries are filtered out at lookup and, so the collection does not grow forever,
deleted by a purge that `put` runs at most once per `purge_interval_s`; after every put the
oldest entries beyond `max_entries` are dropped. Upkeep failures are logged, never raised:
a full or untidy cache must not cost anyone their answer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from retrieval.store.ports import AnswerIndex

log = logging.getLogger("freshrag.cache")

LOOKUPS = Counter("freshrag_answer_cache_lookups_total", "Answer cache lookups", ["result"])
EVICTED = Counter(
    "freshrag_answer_cache_evicted_total",
    "Cached answers deleted by upkeep: expired, or the oldest over max_entries",
    ["reason"],
)


def cache_scope(**parts: Any) -> str:
    """A stable digest of everything that must match for an answer to be reused."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


class AnswerCache:
    def __init__(
        self,
        index: AnswerIndex,
        threshold: float,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
        *,
        max_entries: int = 10_000,
        purge_interval_s: float = 60.0,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.index, self.threshold, self.ttl_s, self.clock = index, threshold, ttl_s, clock
        self.max_entries = max_entries
        self.purge_interval_s = purge_interval_s
        self._next_purge: float | None = None  # None: due at the first put
        # Puts come from several request threads; one upkeep at a time keeps the trim exact.
        self._upkeep = threading.Lock()

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
        self._tidy(now)

    def _tidy(self, now: float) -> None:
        """Purges expired entries when due, then trims to `max_entries`; never raises."""
        with self._upkeep:
            if self._next_purge is None or now >= self._next_purge:
                # Set before trying: a failing backend is retried next interval, not every put.
                self._next_purge = now + self.purge_interval_s
                try:
                    EVICTED.labels("expired").inc(self.index.cache_purge_expired(now))
                except Exception:
                    log.warning("answer cache: purging expired entries failed", exc_info=True)
            try:
                EVICTED.labels("capacity").inc(self.index.cache_trim(self.max_entries))
            except Exception:
                log.warning(
                    "answer cache: trimming to %d entries failed", self.max_entries, exc_info=True
                )
