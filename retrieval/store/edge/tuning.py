"""How the chunks shard is indexed, searched and kept optimised (FRESHRAG_EDGE_* settings)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

import qdrant_edge as qe

from retrieval.store.schema import DENSE, SPARSE

# Payload fields every query filters on: their indexes stay in RAM.
FILTERED_BY_EVERY_QUERY = frozenset({"tenant", "acl"})


@dataclass(frozen=True, slots=True)
class EdgeTuning:
    """How the chunks shard is indexed, searched and kept optimised (FRESHRAG_EDGE_* settings).

    Defaults suit 2 cores: one niced indexing thread in the child leaves a core to serve.
    """

    optimizer: Literal["process", "off"] = "process"
    optimize_after_points: int = 20_000
    optimize_interval_s: float = 120.0
    optimize_threads: int = 1
    optimize_nice: int = 10
    segments: int = 6
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    search_ef: int = 512
    search_threads: int = 1
    quantization: Literal["none", "int8"] = "int8"
    oversampling: float = 2.0
    on_disk: bool = True

    @classmethod
    def from_settings(cls, settings: Any) -> EdgeTuning:
        """The `edge_*` fields of `freshrag.settings.Settings`."""
        return cls(
            optimizer=settings.edge_optimizer,
            optimize_after_points=settings.edge_optimize_after_points,
            optimize_interval_s=settings.edge_optimize_interval_s,
            optimize_threads=settings.edge_optimize_threads,
            optimize_nice=settings.edge_optimize_nice,
            segments=settings.edge_segments,
            hnsw_m=settings.edge_hnsw_m,
            hnsw_ef_construct=settings.edge_hnsw_ef_construct,
            search_ef=settings.edge_search_ef,
            search_threads=settings.edge_search_threads,
            quantization=settings.edge_quantization,
            oversampling=settings.edge_quantization_oversampling,
            on_disk=settings.edge_on_disk,
        )


def chunks_config(dense_dim: int, tuning: EdgeTuning | None) -> qe.EdgeConfig:
    """Schema of the chunks shard; with tuning also its HNSW, quantization and placement.

    Loading an existing shard with this config rewrites its `edge_config.json`; segments
    built under the old config are rebuilt by the next optimisation (in the child).

    With `on_disk`, every part of a sealed segment is memory-mapped (the child's warm-up
    leaves it in the page cache): an optimiser swap's load holds the GIL while it copies
    whatever is held in RAM, and at 1M points int8 vectors, HNSW graph and sparse index
    in RAM made that load twice as long as mapped, for the same query latency (measured
    with a one-off script; issue 12's closing note has the figures).
    """
    if tuning is None:
        dense = qe.EdgeVectorParams(size=dense_dim, distance=qe.Distance.Cosine)
        sparse = {SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
        return qe.EdgeConfig(vectors={DENSE: dense}, sparse_vectors=sparse)
    cold = qe.Memory.Cold if tuning.on_disk else None
    dense = qe.EdgeVectorParams(size=dense_dim, distance=qe.Distance.Cosine, memory=cold)
    sparse = {SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf, memory=cold)}
    quantization = (
        qe.ScalarQuantizationConfig(
            qe.ScalarType.Int8, quantile=0.99, memory=cold or qe.Memory.Pinned
        )
        if tuning.quantization == "int8"
        else None
    )
    return qe.EdgeConfig(
        vectors={DENSE: dense},
        sparse_vectors=sparse,
        hnsw_config=qe.HnswIndexConfig(
            m=tuning.hnsw_m,
            ef_construct=tuning.hnsw_ef_construct,
            full_scan_threshold=10_000,  # KB, Qdrant's default: small filtered sets scan exactly
            max_indexing_threads=tuning.optimize_threads,
            memory=cold,
        ),
        quantization_config=quantization,
        payload_memory=cold,
        # Segments the merge optimiser aims for. Edge's automatic target on 2 cores merged
        # every new batch back into the big segment (7 s per 10k new points at 100k, an
        # HNSW rebuild); with room for a few, a batch is indexed on its own (0.8 s).
        optimizers=qe.EdgeOptimizersConfig(default_segment_number=tuning.segments),
        # 0: Edge derives it from the CPUs. Not persisted as "unset": a later None keeps it.
        max_search_threads=tuning.search_threads or len(os.sched_getaffinity(0)),
    )


def search_params(tuning: EdgeTuning | None) -> qe.SearchParams | None:
    """Dense search: HNSW beam width, and int8 candidates rescored with the originals."""
    if tuning is None:
        return None
    quantization = (
        qe.QuantizationSearchParams(rescore=True, oversampling=tuning.oversampling)
        if tuning.quantization == "int8"
        else qe.QuantizationSearchParams(ignore=True)  # a shard quantized earlier keeps it
    )
    return qe.SearchParams(hnsw_ef=tuning.search_ef, quantization=quantization)
