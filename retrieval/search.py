"""The read path: encode the query once per vector kind and ask the index."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Literal

from freshrag import spans
from freshrag.settings import Settings
from retrieval.encoders import DenseEncoder, SparseEncoder
from retrieval.filters import access_conditions
from retrieval.grouping import boost_by_document, boost_by_heading, group_sections, heading_of
from retrieval.store.ports import ChunkSearch, ReadIndex
from retrieval.store.types import Condition, Fusion, SearchHit, SearchMode, SparseVec

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

    @classmethod
    def of(cls, settings: Settings) -> Ranking:
        s = settings
        return cls(
            Fusion(s.fusion_k, s.fusion_dense_weight, s.fusion_sparse_weight),
            s.document_boost,
            s.search_candidates,
            s.heading_weight,
        )


# The settings' defaults (chosen on the dev set with `bench.quality`), environment unread.
DEFAULT_RANKING = Ranking.of(Settings.model_construct())
# Before them: plain RRF (k=60), no page or heading boost; what the benches compare against.
PREVIOUS_RANKING = replace(
    DEFAULT_RANKING, fusion=Fusion(60, 1.0, 1.0), document_boost=0.0, heading_weight=0.0
)


class Retriever:
    def __init__(
        self,
        index: ChunkSearch,
        dense: DenseEncoder,
        sparse: SparseEncoder,
        ranking: Ranking = DEFAULT_RANKING,
    ) -> None:
        self.index = index
        self.dense = dense
        self.sparse = sparse
        self.ranking = ranking

    def retrieve(
        self,
        principal: Principal,
        query: str,
        top_k: int,
        mode: SearchMode = "hybrid",
        conditions: list[Condition] | None = None,
        dense_vector: list[float] | None = None,
        group: Grouping = "section",
    ) -> list[SearchHit]:
        """The `top_k` best results: fused, boosted by heading and document, one per
        section unless `group="chunk"` (every chunk on its own). Traced as `retrieve`, with
        `encode`, `search` and `rank` inside."""
        with spans.span("retrieve") as span:
            hits = self._retrieve(principal, query, top_k, mode, conditions, dense_vector, group)
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
    ) -> list[SearchHit]:
        must = access_conditions(principal.tenant, list(principal.groups)) + list(conditions or [])
        dense = None
        if mode in ("dense", "hybrid"):
            dense = dense_vector if dense_vector is not None else self.dense.encode_query(query)
        sparse = self.sparse.encode_query(query) if mode in ("sparse", "hybrid") else None
        if sparse is not None and not sparse.indices:
            # Only stopwords: the keyword side has nothing to match.
            if mode == "sparse":
                return []
            mode, sparse = "dense", None
        r = self.ranking
        # The boosts add scores, so they need scores on one scale: hybrid's RRF. Dense
        # (cosine) and sparse (BM25) keep the engine's order, as a baseline to compare.
        hybrid = mode == "hybrid"
        boost, heading = (r.document_boost, r.heading_weight) if hybrid else (0.0, 0.0)
        if group == "chunk" and boost <= 0 and heading <= 0:
            return self._search(mode, dense, sparse, must, top_k)
        hits = self._search(mode, dense, sparse, must, max(r.candidates, 3 * top_k), heading > 0)
        with spans.span("rank") as span:
            # The boosts re-rank the head; a longer list (a large top_k) keeps its tail in
            # fused order. Summed over more candidates, a page boost rewards a page's many
            # weak matches (dev set, heading boost on: page MRR@10 0.85 with 30 re-ranked,
            # 0.82 with 90).
            head, tail = hits[: r.candidates], hits[r.candidates :]
            if dense is not None:
                head = boost_by_heading(head, dense, self.dense.encode_headings, heading)
            ranked = boost_by_document(head, boost) + tail
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
    ) -> list[SearchHit]:
        """The index's candidates: one query, fused inside the engine when hybrid."""
        fusion = self.ranking.fusion
        with spans.span("search") as span:
            hits = self.index.search(
                mode, dense, sparse, must, limit, fusion, with_dense=with_dense
            )
            if span.is_recording():
                attributes: dict[str, spans.AttributeValue] = {
                    "freshrag.mode": mode,
                    "freshrag.search.limit": limit,
                    "freshrag.search.hits": len(hits),
                }
                if mode == "hybrid":
                    attributes["freshrag.search.fusion"] = "rrf"
                    attributes["freshrag.search.fusion_k"] = fusion.k
                span.set_attributes(attributes)
            return hits


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
