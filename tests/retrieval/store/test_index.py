"""The index contract, run against Qdrant Edge and the server adapter: over qdrant-client's
local mode, and over a real Qdrant server when FRESHRAG_TEST_QDRANT_URL names one."""

import pytest

from retrieval.store.types import ChunkPoint, DocumentState, Match, MatchAny, Range, chunk_point_id


def point(dense, sparse, tenant, doc_id, text, acl=("eng",), version=1, **extra):
    h = f"h-{doc_id}-{text}"[:32]
    payload = {
        "tenant": tenant,
        "doc_id": doc_id,
        "acl": list(acl),
        "version": version,
        "text": text,
        "hash": h,
        "chunk_index": 0,
        **extra,
    }
    return ChunkPoint(
        chunk_point_id(tenant, doc_id, h),
        dense.encode_query(text),
        sparse.encode_documents([text])[0],
        payload,
    )


@pytest.mark.model
def test_modes_filters_tenancy_and_registry(index, dense, sparse):
    index.upsert_chunks(
        [
            point(
                dense,
                sparse,
                "acme",
                "cats",
                "Cats purr and sleep all day.",
                metadata={"lang": "en"},
            ),
            point(
                dense,
                sparse,
                "acme",
                "dogs",
                "Dogs bark at the mail carrier.",
                version=3,
                metadata={"lang": "de"},
            ),
            point(
                dense, sparse, "acme", "secret", "Cats in the secret sales plan.", acl=("sales",)
            ),
            point(dense, sparse, "globex", "cats", "Cats purr loudly at globex.", acl=("eng",)),
        ]
    )
    acme_eng = [Match("tenant", "acme"), MatchAny("acl", ("eng",))]
    q = "purring cats"
    for mode in ("dense", "sparse", "hybrid"):
        hits = index.search(mode, dense.encode_query(q), sparse.encode_query(q), acme_eng, 10)
        docs = [h.payload["doc_id"] for h in hits]
        assert docs[0] == "cats", mode
        assert all(h.payload["tenant"] == "acme" and "eng" in h.payload["acl"] for h in hits), mode
        assert "secret" not in docs
    only_de = index.search(
        "dense", dense.encode_query(q), None, acme_eng + [Match("metadata.lang", "de")], 10
    )
    assert [h.payload["doc_id"] for h in only_de] == ["dogs"]
    newer = index.search(
        "dense", dense.encode_query(q), None, acme_eng + [Range("version", gte=2)], 10
    )
    assert [h.payload["doc_id"] for h in newer] == ["dogs"]
    assert index.count_chunks([Match("tenant", "acme")]) == 3

    stored = index.chunks_of("acme", "cats")
    assert len(stored) == 1 and stored[0].hash.startswith("h-cats")
    assert set(index.vectors_by_hash([stored[0].hash])) == {stored[0].hash}

    index.set_payload([stored[0].id], {"version": 7})
    hit = index.search(
        "dense", dense.encode_query(q), None, acme_eng + [Match("doc_id", "cats")], 1
    )[0]
    assert hit.payload["version"] == 7 and hit.payload["text"].startswith("Cats purr")

    index.delete_document_chunks("acme", "cats")
    assert index.chunks_of("acme", "cats") == [] and len(index.chunks_of("globex", "cats")) == 1
    index.delete_chunks([index.chunks_of("acme", "dogs")[0].id])
    assert index.count_chunks([Match("tenant", "acme")]) == 1

    assert index.get_document("acme", "cats") is None
    index.put_document(DocumentState("acme", "cats", 4, True, 0, "2026-01-01T00:00:00Z"))
    state = index.get_document("acme", "cats")
    assert state.version == 4 and state.deleted
    assert index.get_document("globex", "cats") is None
    assert index.ping()


@pytest.mark.model
def test_count_documents_leaves_tombstones_out(index, dense, sparse):
    from tests.conftest import delete, make_indexer, upsert

    indexer = make_indexer(index, dense, sparse)
    indexer.apply(
        [upsert("a", "# A\n\nThe alpha page.", 1), upsert("b", "# B\n\nThe beta page.", 1)]
    )
    indexer.apply([delete("b", 2)])
    assert index.count_documents() == 1


@pytest.mark.model
def test_every_filterable_field_has_a_payload_index(edge_index):
    """Filters never scan payloads: each field a request may filter on is indexed."""
    from retrieval.filters import FILTERABLE

    schema = set(edge_index.chunks.info().payload_schema)
    assert FILTERABLE | {"tenant", "acl"} <= schema


@pytest.mark.model
def test_metadata_keys_in_use_get_a_payload_index_of_their_kind(index, dense, sparse):
    """Both adapters index `metadata.<key>` when first written, and filters still work."""
    from tests.conftest import make_indexer, upsert

    indexer = make_indexer(index, dense, sparse)
    meta = {"doc_type": "faq", "tier": 2, "score": 0.5, "draft": False}
    indexer.apply([upsert("m", "# M\n\nMetadata page.", 1, metadata=meta)])
    indexer.apply([upsert("n", "# N\n\nAnother page.", 1, metadata={"doc_type": "guide"})])
    if index.backend == "edge":
        schema = index.chunks.info().payload_schema
    else:  # a server reports its schema; local mode none: the adapter's record of it then
        reported = index.client.get_collection(index.collection).payload_schema
        schema = reported or {k: None for k in index._metadata_indexed}
    assert {f"metadata.{k}" for k in meta} <= set(schema)
    query = sparse.encode_query("page")
    hits = index.search("sparse", None, query, [Match("metadata.tier", 2)], 10)
    assert {h.payload["doc_id"] for h in hits} == {"m"}


@pytest.mark.unit
def test_metadata_indexes_are_bounded_and_typed():
    from retrieval.store.schema import metadata_indexes

    def point(meta):
        return ChunkPoint("p", [], None, {"metadata": meta})

    kinds = metadata_indexes([point({"a": "x", "b": 1, "c": 1.5, "d": True})], set(), 10)
    assert kinds == {
        "metadata.a": "keyword",
        "metadata.b": "integer",
        "metadata.c": "float",
        "metadata.d": "bool",
    }
    assert metadata_indexes([point({"a": "x", "z": "y"})], {"metadata.a"}, 10) == {
        "metadata.z": "keyword"
    }
    many = point({f"k{i}": "v" for i in range(100)})
    assert len(metadata_indexes([many], set(), 3)) == 3
    assert metadata_indexes([many], set(), 0) == {}
