"""The read path: encode the query once per vector kind and ask the index."""

from __future__ import annotations

from dataclasses import dataclass

from retrieval.encoders import DenseEncoder, SparseEncoder
from retrieval.filters import access_conditions
from retrieval.index import Condition, Index, SearchHit, SearchMode


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking: derived from the API key, never from the request body."""

    name: str
    tenant: str
    groups: tuple[str, ...]


class Retriever:
    def __init__(self, index: Index, dense: DenseEncoder, sparse: SparseEncoder) -> None:
        self.index = index
        self.dense = dense
        self.sparse = sparse

    def retrieve(
        self,
        principal: Principal,
        query: str,
        top_k: int,
        mode: SearchMode = "hybrid",
        conditions: list[Condition] | None = None,
        dense_vector: list[float] | None = None,
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
        return self.index.search(mode, dense, sparse, must, top_k)
