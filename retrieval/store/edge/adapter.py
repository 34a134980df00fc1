"""EdgeIndex: the storage ports over Qdrant Edge shards in this process.

Three shards: the chunks (live and spare, writes logged for the optimiser: `shards`), the
documents registry and the answer cache (small, unlogged). What reads the same on a
server comes from `IndexBase`; here are the chunk writes, the search requests (with the
tuning's HNSW and quantization parameters) and the shards' lifecycle.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from retrieval.store.base import IndexBase, document_conditions, pages
from retrieval.store.edge.answers import open_answers
from retrieval.store.edge.layout import op_logs, open_shard, shard_dirs, state_path
from retrieval.store.edge.oplog import EDGE_KINDS, Record
from retrieval.store.edge.optimizer import EdgeOptimizer
from retrieval.store.edge.points import EdgePoints
from retrieval.store.edge.queries import chunk_request
from retrieval.store.edge.shards import ChunkShards
from retrieval.store.edge.tuning import (
    FILTERED_BY_EVERY_QUERY,
    EdgeTuning,
    chunks_config,
    search_params,
)
from retrieval.store.points import PAGE, ChunkQuery, Scroll
from retrieval.store.schema import INTEGER_INDEXES, KEYWORD_INDEXES, IndexKind
from retrieval.store.types import ChunkPoint

_NOT_OPEN = "index not initialised: call ensure_schema(dim) first"


def _opened(shard: qe.EdgeShard | None) -> qe.EdgeShard:
    if shard is None:
        raise RuntimeError(_NOT_OPEN)
    return shard


def _opened_store(store: ChunkShards | None) -> ChunkShards:
    if store is None:
        raise RuntimeError(_NOT_OPEN)
    return store


class EdgeIndex(IndexBase):
    backend = "edge"

    def __init__(
        self, root: Path, collection: str, registry: str, tuning: EdgeTuning | None = None
    ) -> None:
        """`tuning=None` keeps the shard as Edge makes it (no HNSW built, nothing optimised)."""
        self.root = Path(root)
        self.tuning = tuning
        self._collection = collection
        self._registry_path = self.root / registry
        self._answers_path = self.root / f"{collection}_answers"
        self._chunks: ChunkShards | None = None
        self._registry: qe.EdgeShard | None = None
        self._answers: qe.EdgeShard | None = None
        self._metadata_indexed: set[str] | None = None
        self._search_params = search_params(tuning)
        self.optimizer: EdgeOptimizer | None = None
        self._chunk_points = EdgePoints(self._use)
        self._registry_points = EdgePoints(lambda: nullcontext(self.registry))
        self._answer_points = EdgePoints(lambda: nullcontext(self.answers))

    # --- lifecycle ---------------------------------------------------------------------

    def ensure_schema(self, dense_dim: int) -> None:
        if self._chunks is not None:
            return
        optimise = self.tuning is not None and self.tuning.optimizer == "process"
        self.root.mkdir(parents=True, exist_ok=True)
        on_disk = self.tuning is not None and self.tuning.on_disk
        store = ChunkShards(
            self.root, self._collection, chunks_config(dense_dim, self.tuning), optimise, on_disk
        )
        self._chunks = store
        # The registry needs no vectors; Edge wants at least one declared, so: an unused one.
        reg_config = qe.EdgeConfig(sparse_vectors={"unused": qe.EdgeSparseVectorParams()})
        self._registry = open_shard(self._registry_path, reg_config)
        self._answers = open_answers(self._answers_path, dense_dim)
        wanted = {name: "Keyword" for name in KEYWORD_INDEXES} | {
            name: "Integer" for name in INTEGER_INDEXES
        }
        with store.use() as shard:
            missing = [n for n in wanted if n not in shard.info().payload_schema]
        for name in missing:
            # Edge rebuilds an in-RAM index on every load, and a load holds the GIL, so
            # mapped indexes keep the optimiser's swap short; but mapped tenant and acl
            # indexes, which every query filters on, slowed filtered search (one-off
            # measurements at 300k/500k points in issue 12's closing note), so those two
            # stay in RAM.
            cold = on_disk and name not in FILTERED_BY_EVERY_QUERY
            store.write(("field_index", name, wanted[name], cold))
        if optimise:
            assert self.tuning is not None
            if not store.spare_valid:
                store.make_spare()  # at startup, before traffic: a one-off copy
            self.optimizer = EdgeOptimizer(store, self.tuning, dense_dim)

    @property
    def chunks(self) -> qe.EdgeShard:
        """The live chunks shard (benchmarks and diagnostics; adapter code uses `_use`)."""
        return _opened_store(self._chunks).shard

    def _use(self) -> AbstractContextManager[qe.EdgeShard]:
        return _opened_store(self._chunks).use()

    def _write(self, rec: Record) -> None:
        _opened_store(self._chunks).write(rec)

    @property
    def registry(self) -> qe.EdgeShard:
        return _opened(self._registry)

    @property
    def answers(self) -> qe.EdgeShard:
        return _opened(self._answers)

    def optimize(self, wait: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """Runs an optimiser cycle now; returns its timings (`{}` without the optimiser)."""
        return self.optimizer.request(wait, timeout) if self.optimizer else {}

    def ping(self) -> bool:
        try:
            with self._use() as shard:
                shard.info()
            return True
        except Exception:
            return False

    def close(self) -> None:
        if self.optimizer is not None:
            self.optimizer.close()
            self.optimizer = None
        if self._chunks is not None:
            self._chunks.close()
        for shard in (self._registry, self._answers):
            if shard is not None:
                shard.flush()
                shard.close()
        self._chunks = None
        self._registry = self._answers = None

    def drop(self) -> None:
        self.close()
        c = self._collection
        for path in [*shard_dirs(self.root, c), self._registry_path, self._answers_path]:
            shutil.rmtree(path, ignore_errors=True)
        for path in [state_path(self.root, c), *op_logs(self.root, c)]:
            path.unlink(missing_ok=True)

    # --- chunk writes: each one a record, applied and logged by the store --------------

    def _upsert_points(self, points: list[ChunkPoint]) -> None:
        self._write(
            (
                "upsert",
                [(p.id, p.dense, p.sparse.indices, p.sparse.values, p.payload) for p in points],
            )
        )

    def _payload_fields(self) -> Iterable[str]:
        with self._use() as shard:
            return shard.info().payload_schema

    def _create_index(self, name: str, kind: IndexKind) -> None:
        # Logged like any write, so the optimiser's spare gets the same index.
        on_disk = self.tuning is not None and self.tuning.on_disk
        self._write(("field_index", name, EDGE_KINDS[kind], on_disk))

    def set_payload(self, point_ids: list[str], payload: dict[str, Any]) -> None:
        if point_ids:
            self._write(("set_payload", list(point_ids), payload))

    def set_document_payload(self, tenant: str, doc_id: str, payload: dict[str, Any]) -> None:
        self._write(("set_payload_where", document_conditions(tenant, doc_id), payload))

    def set_chunk_indexes(self, indexes: dict[str, int]) -> None:
        if indexes:
            self._write(("chunk_indexes", dict(indexes)))

    def delete_chunks(self, point_ids: list[str]) -> None:
        if point_ids:
            self._write(("delete", list(point_ids)))

    def delete_document_chunks(self, tenant: str, doc_id: str) -> None:
        self._write(("delete_where", document_conditions(tenant, doc_id)))

    # --- reads that differ from a server's ----------------------------------------------

    def count_documents(self) -> int:
        """Documents indexed and not deleted (the registry, tombstones left out)."""
        # A scroll, not a filtered count: Edge 0.9 does not match booleans in filters.
        scroll = Scroll(PAGE, payload=["deleted"])
        return sum(
            1
            for page in pages(self._registry_points, scroll)
            for r in page
            if not (r.payload or {}).get("deleted")
        )

    def _search_points(self, query: ChunkQuery) -> list[Any]:
        req = chunk_request(query, self._search_params)
        with _opened_store(self._chunks).reading() as shard:
            return shard.query(req)
