"""The read path's re-ranking against a real index: what the heading boost may move."""

import numpy as np

from retrieval.filters import access_conditions
from retrieval.index import Fusion
from retrieval.search import Principal, Ranking, Retriever
from tests.test_index import point

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
    fused = index.search("hybrid", q, sparse.encode_query(QUERY), must, 18, fusion)
    ranking = Ranking(fusion, document_boost=0.0, candidates=3, heading_weight=5.0)
    out = Retriever(index, dense, sparse, ranking).retrieve(WHO, QUERY, 6, group="chunk")

    head = fused[:3]
    cos = {h.id: float(np.dot(q, dense.encode([h.payload["section"]])[0])) for h in head}
    expected = sorted(head, key=lambda h: -(h.score + 5.0 * cos[h.id]))
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
