"""The read path's re-ranking against a real index: what the heading boost may move."""

import threading
from dataclasses import replace

import numpy as np
import pytest

from retrieval import grouping
from retrieval.filters import access_conditions
from retrieval.search import DEFAULT_RANKING, Principal, Ranking, Retriever, warm_headings
from retrieval.store.types import DocumentState, Fusion
from tests.retrieval.store.test_index import point

pytestmark = pytest.mark.model

SECTIONS = {
    "Persistent connections": "Connections are closed after each request by default.",
    "Connection pooling": "Keep connections open and reuse them for later requests.",
    "Caveats": "Each thread keeps its own connection to the database.",
    "Time zones": "Connections may set the session time zone when they open.",
    "Release notes": "Database connections are now reused when CONN_MAX_AGE is set.",
    "Testing": "The test runner closes connections between tests.",
}
QUERY = "keep database connections open between requests"
WHO = Principal("t", "acme", ("eng",))


def test_the_heading_boost_reorders_the_head_and_keeps_the_tail(index, dense, sparse):
    index.upsert_chunks(
        [
            point(dense, sparse, "acme", f"doc{n}", text, section=heading)
            for n, (heading, text) in enumerate(SECTIONS.items())
        ]
    )
    fusion = Fusion(5, 2.0, 1.0)
    q = dense.encode_query(QUERY)
    must = access_conditions("acme", ["eng"])
    fused = index.search("hybrid", q, sparse.encode_query(QUERY), must, 18, fusion, with_dense=True)
    assert all(h.vector is not None and len(h.vector) == dense.dim for h in fused)
    ranking = Ranking(fusion, document_boost=0.0, candidates=3, heading_weight=5.0)
    out = Retriever(index, dense, sparse, ranking).retrieve(WHO, QUERY, 6, group="chunk")

    head = fused[:3]

    def bonus(h):  # noqa: ANN001, ANN202
        heading = dense.encode([h.payload["section"]])[0]
        if np.dot(heading, h.vector) < grouping._FIT:  # a heading that misdescribes its text
            return float(np.dot(q, h.vector)) - grouping._UNFIT_COST
        return float(np.dot(q, heading))

    expected = sorted(head, key=lambda h: -(h.score + 5.0 * bonus(h)))
    assert [h.id for h in expected] != [h.id for h in head], "the case must move something"
    assert [h.id for h in out[:3]] == [h.id for h in expected]
    assert [h.id for h in out[3:]] == [h.id for h in fused[3:6]]  # the tail as fused
    # Weight 0: the index's own order.
    plain = Retriever(index, dense, sparse, Ranking(fusion, 0.0, 3, 0.0))
    assert [h.id for h in plain.retrieve(WHO, QUERY, 6, group="chunk")] == [h.id for h in fused[:6]]
    # Dense and sparse alone keep the engine's order: no boost outside hybrid.
    dense_only = index.search("dense", q, None, must, 6, fusion)
    boosted = Retriever(index, dense, sparse, ranking).retrieve(
        WHO, QUERY, 6, "dense", group="chunk"
    )
    assert [h.id for h in boosted] == [h.id for h in dense_only]


def test_headings_embedded_ahead_leave_a_query_only_itself_to_encode(edge_index, sparse):
    from retrieval.encoders import DenseEncoder

    dense = DenseEncoder("all-MiniLM-L6-v2")  # its own heading cache, empty
    edge_index.upsert_chunks(
        [
            point(dense, sparse, "acme", f"doc{n}", text, section=heading, chunk_index=0)
            for n, (heading, text) in enumerate(SECTIONS.items())
        ]
    )
    for n in range(len(SECTIONS)):
        when = "2026-01-01" if n else "2026-01-02"  # doc0: indexed later
        edge_index.put_document(DocumentState("acme", f"doc{n}", 1, False, 1, when))
    edge_index.put_document(DocumentState("acme", "gone", 2, True, 0, "2026-01-03"))
    # A later pass takes only documents indexed since the one before.
    assert warm_headings(edge_index, dense, since="2026-01-01") == (1, "2026-01-02")
    assert dense.headings_cached() == 1
    added, newest = warm_headings(edge_index, dense, step=4)
    assert (added, newest) == (len(SECTIONS), "2026-01-02")
    assert dense.headings_cached() == len(SECTIONS)
    before = dense.texts_encoded
    boost = replace(DEFAULT_RANKING, heading_weight=0.3, document_boost=0.1)
    hits = Retriever(edge_index, dense, sparse, boost).retrieve(WHO, "reuse a db connection?", 6)
    assert hits and dense.texts_encoded - before == 1  # the query; every heading was kept
    dense.heading_cache_size = 2
    assert warm_headings(edge_index, dense)[0] == 0  # full: nothing more


def test_the_service_embeds_the_indexed_headings_ahead(tmp_path, edge_index, sparse):
    from api.auth import KeyStore
    from freshrag.runtime import Core
    from retrieval.encoders import DenseEncoder
    from tests.conftest import make_indexer, make_settings, upsert, wait_for

    settings = make_settings(tmp_path, ingest_process=False, heading_weight=0.3)
    dense = DenseEncoder("all-MiniLM-L6-v2")  # its own, empty heading cache
    body = "# Guide\n\n## Alpha rotation\n\nRotate keys weekly.\n\n## Beta ledger\n\nLedgers.\n"
    indexer = make_indexer(edge_index, dense, sparse)
    indexer.apply([upsert("guide", body, acl=["eng"])])
    indexer.processor.close()
    assert dense.headings_cached() == 0
    Core(settings, edge_index, dense, sparse).services(KeyStore({}))
    wait_for(lambda: dense.headings_cached() >= 2, timeout=30)  # the boost is on here
    assert set(dense._headings.get_many(["Alpha rotation", "Beta ledger"])) == {
        "Alpha rotation",
        "Beta ledger",
    }


def test_with_the_boost_off_nothing_is_embedded_ahead(tmp_path, edge_index, sparse, dense):
    from api.auth import KeyStore
    from freshrag.runtime import Core
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, ingest_process=False)
    assert settings.heading_weight == 0  # the default
    core = Core(settings, edge_index, dense, sparse)
    running = set(threading.enumerate())  # an earlier test's warm-up may still sleep
    services = core.services(KeyStore({}))
    assert not core._warming  # no background pass, no heading cache to fill
    started = {t.name for t in threading.enumerate() if t not in running}
    assert "heading-warm-up" not in started
    edge_index.upsert_chunks(
        [point(dense, sparse, "acme", "d", "Rotate keys weekly.", section="Keys")]
    )
    cached, before = dense.headings_cached(), dense.texts_encoded
    assert services.retriever.retrieve(WHO, "how often are keys rotated", 5)
    assert dense.texts_encoded - before == 1, "the query alone: no heading is embedded"
    assert dense.headings_cached() == cached
