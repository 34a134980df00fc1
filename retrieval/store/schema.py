"""The layout both backends give a collection: named vectors and payload indexes."""

from __future__ import annotations

from typing import Literal

from retrieval.store.types import ChunkPoint

DENSE = "dense"
SPARSE = "sparse"

# Payload fields with an index; doc_id/tenant/acl/hash are keywords, version an integer.
# Every field a request may filter on gets a payload index, so a filtered search on a big
# collection (or a Qdrant server in strict mode) never scans payloads.
KEYWORD_INDEXES = ("doc_id", "tenant", "acl", "hash", "title", "source", "mime")
INTEGER_INDEXES = ("version", "chunk_index")
# `metadata.<key>` fields get an index when first written, up to this many: keys come from
# events, so an unbounded number of them must not mean an unbounded number of indexes.
MAX_METADATA_INDEXES = 64
IndexKind = Literal["keyword", "integer", "float", "bool"]


def metadata_indexes(
    points: list[ChunkPoint], indexed: set[str], limit: int = MAX_METADATA_INDEXES
) -> dict[str, IndexKind]:
    """The `metadata.<key>` fields these points bring that have no index yet, and the kind
    each needs (from the first value seen: bool, integer, float, else keyword), in the
    order they appear, so that `indexed` plus them stays within `limit`."""
    room = limit - len(indexed)
    out: dict[str, IndexKind] = {}
    for p in points:
        for key, value in (p.payload.get("metadata") or {}).items():
            name = f"metadata.{key}"
            if name in indexed or name in out:
                continue
            if len(out) >= room:
                return out
            if isinstance(value, bool):
                out[name] = "bool"
            elif isinstance(value, int):
                out[name] = "integer"
            elif isinstance(value, float):
                out[name] = "float"
            else:
                out[name] = "keyword"
    return out
