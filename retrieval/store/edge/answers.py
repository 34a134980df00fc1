"""The answer cache's shard: small and unlogged (the optimiser leaves it alone)."""

from __future__ import annotations

from pathlib import Path

import qdrant_edge as qe

from retrieval.store.edge.layout import open_shard
from retrieval.store.schema import DENSE

# Float indexes: expires_at for the purge filter, created_at for order_by in the trim.
_INDEXES = {
    "scope": qe.PayloadSchemaType.Keyword,
    "expires_at": qe.PayloadSchemaType.Float,
    "created_at": qe.PayloadSchemaType.Float,
}


def open_answers(path: Path, dense_dim: int) -> qe.EdgeShard:
    """Opens (or creates) the shard with its payload indexes, adding those it lacks."""
    dense = {DENSE: qe.EdgeVectorParams(size=dense_dim, distance=qe.Distance.Cosine)}
    shard = open_shard(path, qe.EdgeConfig(vectors=dense))
    existing = set(shard.info().payload_schema)
    for name, kind in _INDEXES.items():
        if name not in existing:
            shard.update(qe.UpdateOperation.create_field_index(name, kind))
    return shard
