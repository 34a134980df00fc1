"""The read path: encode the query once per vector kind and ask the index."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from freshrag import spans
from freshrag.settings import Settings
from retrieval.encoders import DenseEncoder, SparseEncoder
from retrieval.filters import access_conditions
from retrieval.grouping import boost_by_document, boost_by_heading, group_sections, heading_of
from retrieval.rerank.base import Reranker
from retrieval.stages import Stages, half_life_s
from retrieval.store.ports import ChunkSearch, ReadIndex
from retrieval.store.types import (
    Condition,
    Diversity,
    Fusion,
    Recency,
    SearchHit,
    SearchMode,
    SparseVec,
)

Grouping = Literal["section", "chunk"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: derived from the API key, never from the request body."""

    name: str
    tenant: str
    groups: tuple[str, ...]
    admin: bool = False  # may run operator actions (/admin/…); reads no more than its groups


@dataclass(frozen=True, slots=True)
class Ranking:
    """How candidates become results (Settings: FRESHRAG_FUSION_*, _HEADING_WEIGHT, ...)."""

    fusion: Fusion
    document_boost: float
    candidates: int  # chunks ranked before grouping; at least 3 × top_k
    heading_weight: float = 0.0
    # The optional stages (docs/explanation/ranking.md); 0 / False: off.
    diversity: float = 0.0  # MMR in the engine
    recency_s: float = 0.0  # half-life of the decay on event_time, in the engine
    rerank: bool = False  # with a reranker: re-order the best `rerank_candidates` chunks
    rerank_candidates: int = 10

    @classmethod
    def of(cls, settings: Settings) -> Ranking:
        s = settings
        return cls(
            Fusion(s.fusion_k, s.fusion_dense_weight, s.fusion_sparse_weight, s.fusion),
            s.document_boost,
            s.search_candidates,
            s.heading_weight,
            s.diversity,
            half_life_s(s.recency),
            s.reranker != "none",
            s.rerank_candidates,
        )

    def for_request(self, stages: Stages | None) -> Ranking:
        """This ranking with what one request set of the stages."""
        if stages is None or not stages.asked():
            return self
        f, st = self.fusion, stages
        fusion = Fusion(
            f.k,
            f.dense_weight if st.dense_weight is None else st.dense_weight,
            f.sparse_weight if st.sparse_weight is None else st.sparse_weight,
            f.method if st.fusion is None else st.fusion,
        )
        return replace(
            self,
            fusion=fusion,
            diversity=self.diversity if st.diversity is None else st.diversity,
            recency_s=self.recency_s if st.recency_s is None else st.recency_s,
            rerank=self.rerank if st.rerank is None else st.rerank,
            rerank_candidates=st.rerank_candidates or self.rerank_candidates,
        )


# The settings' defaults (chosen on the dev set with `bench.quality`), environment unread.
DEFAULT_RANKING = Ranking.of(Settings.model_construct())
# Before them: plain RRF (k=60), no page or heading boost; what the benches compare against.
PREVIOUS_RANKING = replace(
    DEFAULT_RANKING, fusion=Fusion(60, 1.0, 1.0), document_boost=0.0, heading_weight=0.0
)


# With diversity and section grouping, a search that found fewer than top_k sections is
# asked again for this many times the chunks, up to `_MAX_CHUNKS`.
_WIDEN = 3
_MAX_CHUNKS = 1000


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Retriever:
    def __init__(
        self,
        index: ChunkSearch,
        dense: DenseEncoder,
        sparse: SparseEncoder,
        ranking: Ranking = DEFAULT_RANKING,
        reranker: Reranker | None = None,
    ) -> None:
        self.index = index
        self.dense = dense
        self.sparse = sparse
        self.ranking = ranking
        # FRESHRAG_RERANKER's model (retrieval/rerank/); None: requests cannot rerank.
        self.reranker = reranker
        self.clock: Callable[[], datetime] = _utc_now  # what recency measures ages from

    def retrieve(
        self,
        principal: Principal,
        query: str,
        top_k: int,
        mode: SearchMode = "hybrid",
        conditions: list[Condition] | None = None,
        dense_vector: list[float] | None = None,
        group: Grouping = "section",
        stages: Stages | None = None,
        deadline: float | None = None,
        timings: dict[str, float] | None = None,
    ) -> list[SearchHit]:
        """The `top_k` best results: fused (and decayed by age, diversified, when asked),
        boosted by heading and document, reranked when asked, one per section unless
        `group="chunk"` (every chunk on its own). `stages`: this request's choices;
        `deadline` (time.monotonic()) bounds an LLM reranker; `timings` gets `rerank_ms`.
        Traced as `retrieve`, with `encode`, `search`, `rank` and `rerank` inside."""
        r = self.ranking.for_request(stages)
        with spans.span("retrieve") as span:
            hits = self._retrieve(
                principal, query, top_k, mode, conditions, dense_vector, group, r, deadline, timings
            )
            if span.is_recording():
                span.set_attributes(
                    {
                        "freshrag.mode": mode,
                        "freshrag.top_k": top_k,
                        "freshrag.group": group,
                        "freshrag.hits": len(hits),
                    }
                )
            return hits

    def _retrieve(
        self,
        principal: Principal,
        query: str,
        top_k: int,
        mode: SearchMode,
        conditions: list[Condition] | None,
        dense_vector: list[float] | None,
        group: Grouping,
        r: Ranking,
        deadline: float | None,
        timings: dict[str, float] | None,
    ) -> list[SearchHit]:
        must = access_conditions(principal.tenant, list(principal.groups)) + list(conditions or [])
        dense = None
        diverse = r.diversity > 0
        if mode in ("dense", "hybrid") or diverse:  # MMR compares dense vectors in any mode
            dense = dense_vector if dense_vector is not None else self.dense.encode_query(query)
        sparse = self.sparse.encode_query(query) if mode in ("sparse", "hybrid") else None
        if sparse is not None and not sparse.indices:
            # Only stopwords: the keyword side has nothing to match.
            if mode == "sparse":
                return []
            mode, sparse = "dense", None
        # The boosts add scores, so they need scores on one scale: hybrid's fused ones.
        # Dense (cosine) and sparse (BM25) keep the engine's order, as a baseline to
        # compare; so does MMR, whose order is the point (the boosts would gather a page's
        # sections again).
        hybrid = mode == "hybrid" and not diverse
        boost, heading = (r.document_boost, r.heading_weight) if hybrid else (0.0, 0.0)
        rerank = r.rerank and self.reranker is not None
        if group == "chunk" and boost <= 0 and heading <= 0 and not rerank:
            return self._search(mode, dense, sparse, must, top_k, ranking=r)
        limit = max(r.candidates, 3 * top_k, r.rerank_candidates if rerank else 0)
        hits = self._search(mode, dense, sparse, must, limit, heading > 0, r)
        while diverse and group == "section" and len(hits) == limit < _MAX_CHUNKS:
            if len(group_sections(hits)) >= top_k:
                break
            # MMR spread the chunks over fewer than top_k sections: ask for more of them.
            limit = min(limit * _WIDEN, _MAX_CHUNKS)
            hits = self._search(mode, dense, sparse, must, limit, False, r)
        with spans.span("rank") as span:
            # The boosts re-rank the head; a longer list (a large top_k) keeps its tail in
            # fused order. Summed over more candidates, a page boost rewards a page's many
            # weak matches (dev set, heading boost on: page MRR@10 0.85 with 30 re-ranked,
            # 0.82 with 90).
            head, tail = hits[: r.candidates], hits[r.candidates :]
            if dense is not None:
                head = boost_by_heading(head, dense, self.dense.encode_headings, heading)
            ranked = boost_by_document(head, boost) + tail
            if rerank:
                ranked = self._rerank(query, ranked, r.rerank_candidates, deadline, timings)
            if group == "section":
                ranked = group_sections(ranked)
            if span.is_recording():
                span.set_attributes(
                    {
                        "freshrag.rank.candidates": len(hits),
                        "freshrag.rank.heading_weight": heading if dense is not None else 0.0,
                        "freshrag.rank.document_boost": boost,
                        "freshrag.group": group,
                        "freshrag.hits": min(top_k, len(ranked)),
                    }
                )
        return ranked[:top_k]

    def _search(
        self,
        mode: SearchMode,
        dense: list[float] | None,
        sparse: SparseVec | None,
        must: list[Condition],
        limit: int,
        with_dense: bool = False,
        ranking: Ranking | None = None,
    ) -> list[SearchHit]:
        """The index's candidates: one query, fused inside the engine when hybrid, then
        decayed by age and diversified there when the ranking asks."""
        r = ranking or self.ranking
        fusion = r.fusion
        recency = diversity = None
        if r.recency_s > 0:
            now = self.clock().astimezone(UTC).isoformat(timespec="seconds")
            recency = Recency(r.recency_s, now.replace("+00:00", "Z"))
        if r.diversity > 0:
            # MMR picks the `limit` hits among 4 × as many candidates of the stage before.
            diversity = Diversity(r.diversity, 4 * limit)
        with spans.span("search") as span:
            hits = self.index.search(
                mode,
                dense,
                sparse,
                must,
                limit,
                fusion,
                with_dense=with_dense,
                recency=recency,
                diversity=diversity,
            )
            if span.is_recording():
                attributes: dict[str, spans.AttributeValue] = {
                    "freshrag.mode": mode,
                    "freshrag.search.limit": limit,
                    "freshrag.search.hits": len(hits),
                }
                if mode == "hybrid":
                    attributes["freshrag.search.fusion"] = fusion.method
                    attributes["freshrag.search.fusion_k"] = fusion.k
                if recency is not None:
                    attributes["freshrag.search.recency_s"] = recency.half_life_s
                if diversity is not None:
                    attributes["freshrag.search.diversity"] = diversity.diversity
                span.set_attributes(attributes)
            return hits

    def _rerank(
        self,
        query: str,
        hits: list[SearchHit],
        candidates: int,
        deadline: float | None,
        timings: dict[str, float] | None,
    ) -> list[SearchHit]:
        """The best `candidates` re-ordered by the reranker, the rest after them as they were."""
        assert self.reranker is not None
        started = time.perf_counter()
        with spans.span("rerank") as span:
            head = self.reranker.rerank(query, hits[:candidates], deadline)
            if span.is_recording():
                span.set_attributes(
                    {
                        "freshrag.rerank.kind": self.reranker.name,
                        "freshrag.rerank.candidates": len(head),
                    }
                )
        if timings is not None:
            timings["rerank_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return head + hits[candidates:]


def warm_headings(
    index: ReadIndex,
    dense: DenseEncoder,
    stop: threading.Event | None = None,
    step: int = 16,
    since: str = "",
) -> tuple[int, str]:
    """Embeds the section headings of documents indexed after `since` (ISO time; "" for
    all) before queries need them (the heading boost), until the encoder's heading cache
    is full. Returns how many headings it passed to the encoder and the newest
    `indexed_at` it saw, the `since` of the next pass.

    A cold heading costs its query a model call: 30 new ones about 30 ms on 2 cores.
    `step` headings go per call, so a query waits behind at most one small batch.
    """
    added, seen, newest = 0, set(), since
    keys = []
    for d in index.documents():
        if not d.deleted and d.indexed_at > since:
            keys.append((d.tenant, d.doc_id))
            newest = max(newest, d.indexed_at)
    for i in range(0, len(keys), 64):
        pending: list[str] = []
        for records in index.chunk_payloads(keys[i : i + 64]).values():
            for _, payload in records:
                text = heading_of(SearchHit("", 0.0, payload))
                if text and text not in seen:
                    seen.add(text)
                    pending.append(text)
        for j in range(0, len(pending), step):
            if (stop is not None and stop.is_set()) or (
                dense.headings_cached() >= dense.heading_cache_size
            ):
                return added, newest
            dense.encode_headings(pending[j : j + step])
            added += len(pending[j : j + step])
    return added, newest
