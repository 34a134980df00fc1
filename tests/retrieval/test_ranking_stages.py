"""The optional ranking stages (issue 28) against real engines: fusion per request, MMR
diversity and the recency decay run inside Qdrant Edge and the server adapter (over
qdrant-client's local mode); the read path with every stage off returns exactly what it
returned before; the recency case (two versions of a fact, the newer wins); diversity
with section grouping still returns top_k sections."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
import qdrant_edge as qe

from freshrag.settings import Settings
from retrieval.search import DEFAULT_RANKING, Principal, Retriever
from retrieval.stages import HALF_LIFE_PATTERN, Stages, half_life_s
from retrieval.store.base import prefetch_limit
from retrieval.store.edge.filters import sparse_vector, to_edge_filter
from retrieval.store.schema import DENSE, SPARSE
from retrieval.store.types import (
    ChunkPoint,
    Diversity,
    Fusion,
    Match,
    Recency,
    SearchHit,
    SparseVec,
)
from tests.conftest import make_indexer, open_backend, upsert

WHO = Principal("t", "acme", ("eng",))
MUST = [Match("tenant", "acme")]
NOW = "2026-01-01T00:00:00Z"


# --- the half-life syntax -----------------------------------------------------------------


@pytest.mark.unit
def test_a_half_life_is_hours_days_or_weeks_and_the_settings_take_the_same_syntax():
    assert half_life_s("12h") == 12 * 3600
    assert half_life_s("30d") == 30 * 86400
    assert half_life_s("2w") == 14 * 86400
    assert half_life_s("off") == 0
    for bad in ("", "0d", "30", "30m", "1.5d", "-1d", "100000d", "30 d", "OFF", "d"):
        with pytest.raises(ValueError, match="half-life"):
            half_life_s(bad)
    field = Settings.model_fields["recency"]
    assert any(getattr(m, "pattern", None) == HALF_LIFE_PATTERN for m in field.metadata)
    assert Settings(recency="30d").recency == "30d"


@pytest.mark.unit
def test_a_request_overrides_only_the_stages_it_sets():
    r = replace(DEFAULT_RANKING, diversity=0.2, rerank=True)
    assert r.for_request(None) is r and r.for_request(Stages()) is r
    asked = r.for_request(Stages(fusion="dbsf", sparse_weight=3.0, recency_s=60.0, rerank=False))
    assert asked.fusion == replace(r.fusion, method="dbsf", sparse_weight=3.0)
    assert (asked.diversity, asked.recency_s, asked.rerank) == (0.2, 60.0, False)
    assert r.for_request(Stages(diversity=0.0)).diversity == 0.0  # 0 turns a default off


# --- the stages inside both engines, on hand-made vectors ---------------------------------


def _vec(*xs: float) -> list[float]:
    v = np.asarray(xs, dtype=np.float32)
    return (v / np.linalg.norm(v)).tolist()


def _point(
    doc: str,
    dense: list[float],
    terms: list[int],
    when: str = NOW,
    weights: list[float] | None = None,
) -> ChunkPoint:
    payload = {"tenant": "acme", "doc_id": doc, "acl": ["eng"], "event_time": when, "text": doc}
    sparse = SparseVec(terms, weights or [1.0] * len(terms))
    return ChunkPoint(str(uuid.uuid4()), dense, sparse, payload)


@pytest.fixture(params=["edge", "server"])
def engine(request, tmp_path):  # noqa: ANN001, ANN201
    """Qdrant Edge, and the server adapter over qdrant-client's local mode, 4-d vectors."""
    index = open_backend(request.param, tmp_path, 4)
    yield index
    index.close()


def _docs(hits: list[SearchHit]) -> list[str]:
    return [h.payload["doc_id"] for h in hits]


@pytest.mark.unit
def test_fusion_per_request_dbsf_and_its_weights(engine):
    q = _vec(1, 0, 0, 0)
    # The dense list ranks a, b, c, d; the sparse one d, c, b, a.
    engine.upsert_chunks(
        [
            _point("a", _vec(1, 0.05, 0, 0), [1], weights=[0.2]),
            _point("b", _vec(1, 0.3, 0, 0), [1], weights=[0.5]),
            _point("c", _vec(1, 0.8, 0, 0), [1, 2]),
            _point("d", _vec(1, 2, 0, 0), [1, 2, 3]),
        ]
    )
    terms = SparseVec([1, 2, 3], [1.0, 1.0, 1.0])
    lists = [_docs(engine.search(m, q, terms, MUST, 40)) for m in ("dense", "sparse")]
    assert lists == [["a", "b", "c", "d"], ["d", "c", "b", "a"]]

    def search(fusion: Fusion) -> list[str]:
        return _docs(engine.search("hybrid", q, terms, MUST, 4, fusion))

    # Weighted RRF, as documented: 1 / (r / w + k - 1) summed over the lists.
    for fusion in (Fusion(2, 1, 8, "rrf"), Fusion(2, 8, 1, "rrf"), Fusion(60, 1, 3, "rrf")):
        weights = (fusion.dense_weight, fusion.sparse_weight)
        rrf = {
            d: sum(
                1 / ((ranked.index(d) + 1) / w + fusion.k - 1)
                for ranked, w in zip(lists, weights, strict=True)
            )
            for d in lists[0]
        }
        assert search(fusion) == sorted(rrf, key=lambda d: -rrf[d]), fusion
    assert search(Fusion(2, 8, 1, "rrf")) != search(Fusion(2, 1, 8, "rrf"))
    # Weighted DBSF (each list normalised alone, then weighed, in a formula) agrees with
    # Qdrant's own DBSF at (nearly) equal weights; a heavy list leads.
    assert search(Fusion(60, 1, 1.0001, "dbsf")) == search(Fusion(60, 1, 1, "dbsf"))
    assert search(Fusion(60, 10, 1, "dbsf")) == lists[0]
    assert search(Fusion(60, 1, 10, "dbsf")) == lists[1]


@pytest.mark.unit
def test_recency_decays_the_fused_score_by_the_age_of_event_time(engine):
    q = _vec(1, 0, 0, 0)
    same = _vec(1, 0.2, 0, 0)
    engine.upsert_chunks(
        [
            _point("old", same, [1], "2025-01-01T00:00:00Z"),
            _point("new", same, [1], "2025-12-01T00:00:00Z"),
            _point("future", same, [1], "2027-01-01T00:00:00Z"),  # counts as now
            _point("ancient", _vec(1, 0.1, 0, 0), [1], "1990-01-01T00:00:00Z"),
            _point("ancient-far", _vec(0.2, 1, 0, 0), [1], "1991-01-01T00:00:00Z"),
        ]
    )
    terms = SparseVec([1], [1.0])
    for mode in ("dense", "sparse", "hybrid"):
        fusion = Fusion(5, 2, 1)
        plain = {
            h.payload["doc_id"]: h.score for h in engine.search(mode, q, terms, MUST, 5, fusion)
        }
        recency = Recency(30 * 86400.0, NOW)
        hits = engine.search(mode, q, terms, MUST, 5, fusion, recency=recency)
        got = {h.payload["doc_id"]: h.score for h in hits}
        assert _docs(hits)[:3] == ["future", "new", "old"], mode
        assert got["future"] == pytest.approx(plain["future"], rel=1e-5)
        days = (datetime(2026, 1, 1, tzinfo=UTC) - datetime(2025, 12, 1, tzinfo=UTC)).days
        assert got["new"] == pytest.approx(plain["new"] * 0.5 ** (days / 30), rel=1e-4)
        # Past 100 half-lives the decay stops: the oldest keep their order by relevance.
        assert got["ancient"] > 0 and got["ancient-far"] > 0, mode
        assert (got["ancient"] > got["ancient-far"]) == (plain["ancient"] > plain["ancient-far"]), (
            mode
        )


@pytest.mark.unit
def test_diversity_is_mmr_inside_the_engine_in_every_mode(engine):
    q = _vec(1, 0, 0, 0)
    twins = [_point(f"twin{i}", _vec(1, 0.3, 0.01 * i, 0), [1]) for i in range(4)]
    other = _point("other", _vec(1, -0.5, 0, 0.5), [1])
    engine.upsert_chunks([*twins, other])
    terms = SparseVec([1], [1.0])
    for mode in ("dense", "sparse", "hybrid"):
        plain = _docs(engine.search("dense", q, None, MUST, 2))
        assert plain[1].startswith("twin")
        diverse = engine.search(mode, q, terms, MUST, 2, diversity=Diversity(0.6, 20))
        assert _docs(diverse)[1] == "other", mode
        # Next to nothing: the engine's relevance order.
        mild = engine.search(mode, q, terms, MUST, 5, diversity=Diversity(0.001, 20))
        assert _docs(mild) == _docs(engine.search("dense", q, None, MUST, 5)), mode


# --- with every stage off: the request the code sent before ---------------------------------


def _before(index, mode, dense, sparse, conditions, limit, fusion) -> list:  # noqa: ANN001
    """retrieval/store/edge/adapter.py's search request as it was before issue 28."""
    flt = to_edge_filter(conditions)
    params = index._search_params
    if mode == "dense":
        req = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(dense, using=DENSE),
            filter=flt,
            with_payload=True,
            with_vector=False,
            params=params,
        )
    elif mode == "sparse":
        req = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(sparse_vector(sparse), using=SPARSE),
            filter=flt,
            with_payload=True,
            with_vector=False,
        )
    else:
        n = prefetch_limit(limit)
        req = qe.QueryRequest(
            limit=limit,
            prefetches=[
                qe.Prefetch(
                    limit=n, query=qe.Query.Nearest(dense, using=DENSE), filter=flt, params=params
                ),
                qe.Prefetch(
                    limit=n, query=qe.Query.Nearest(sparse_vector(sparse), using=SPARSE), filter=flt
                ),
            ],
            query=qe.Fusion.Rrf(k=fusion.k, weights=[fusion.dense_weight, fusion.sparse_weight]),
            filter=flt,
            with_payload=True,
            with_vector=False,
        )
    with index._chunks.reading() as shard:
        return _tied([(str(p.id), p.score) for p in shard.query(req)])


def _tied(rows: list[tuple]) -> list[tuple]:
    """Points of exactly equal score in a fixed order: Qdrant Edge returns RRF ties in no
    fixed order, call to call (the limits below take every point, so none is cut)."""
    return sorted(rows, key=lambda r: (-r[1], r))


DOCS = {
    "pool": "# Pooling\n\n## Persistent connections\n\nKeep database connections open and "
    "reuse them between requests with CONN_MAX_AGE.\n\n## Health checks\n\nA connection "
    "is checked before reuse when CONN_HEALTH_CHECKS is on.",
    "tz": "# Time zones\n\n## Sessions\n\nEach database connection sets its session time "
    "zone when it opens.",
    "tests": "# Testing\n\n## Connections\n\nThe test runner closes database connections "
    "between tests, so no test sees another's session.",
    "release": "# Release notes\n\n## 5.1\n\nDatabase connections are now reused when "
    "CONN_MAX_AGE is set, and health checks are new.",
}
QUERIES = ["keep database connections open between requests", "session time zone", "the"]


@pytest.mark.model
def test_with_every_stage_off_results_are_what_they_were(edge_index, dense, sparse):
    make_indexer(edge_index, dense, sparse).apply(
        [upsert(d, t, 1, tenant="acme", acl=["eng"]) for d, t in DOCS.items()]
    )
    fusion = DEFAULT_RANKING.fusion
    for query in QUERIES[:2]:
        q, s = dense.encode_query(query), sparse.encode_query(query)
        for mode in ("dense", "sparse", "hybrid"):
            now = [(h.id, h.score) for h in edge_index.search(mode, q, s, MUST, 40, fusion)]
            assert _tied(now) == _before(edge_index, mode, q, s, MUST, 40, fusion), (query, mode)
    off = Stages(
        fusion="rrf",
        dense_weight=fusion.dense_weight,
        sparse_weight=fusion.sparse_weight,
        diversity=0.0,
        recency_s=0.0,
        rerank=False,
    )
    retriever = Retriever(edge_index, dense, sparse)

    def rows(hits: list[SearchHit]) -> list[tuple]:
        # Every hit (top_k over the index's size), ties in a fixed order as above.
        return _tied([(h.payload["text"], h.score, h.payload["doc_id"]) for h in hits])

    for query in QUERIES:
        for mode in ("hybrid", "dense", "sparse"):
            for group in ("section", "chunk"):
                default = retriever.retrieve(WHO, query, 40, mode, group=group)
                explicit = retriever.retrieve(WHO, query, 40, mode, group=group, stages=off)
                assert rows(explicit) == rows(default), (query, mode, group)
                assert [h.score for h in explicit] == [h.score for h in default]


# --- recency: the newer of two versions of a fact wins at equal relevance ------------------

FACT = {
    "handbook/2023": "# Office hours\n\n## Closing time\n\nThe Berlin office closes at 18:00 "
    "on weekdays.",
    "handbook/2025": "# Office hours\n\n## Closing time\n\nThe Berlin office closes at 19:00 "
    "on weekdays.",
}
FACT_QUERY = "When does the Berlin office close?"


@pytest.mark.model
def test_recency_puts_the_newer_version_of_a_fact_first(index, dense, sparse):
    """Two documents state the fact differently; whichever carries the newer event_time
    leads with recency on, in both engines (with it off, their texts decide)."""
    indexer = make_indexer(index, dense, sparse)
    dates = ("2024-01-10T00:00:00Z", "2025-11-20T00:00:00Z")
    for tenant, newer in (("acme", "handbook/2025"), ("globex", "handbook/2023")):
        indexer.apply(
            [
                upsert(d, t, 1, tenant=tenant, acl=["eng"], event_time=dates[d == newer])
                for d, t in FACT.items()
            ]
        )
    retriever = Retriever(index, dense, sparse, replace(DEFAULT_RANKING, recency_s=0.0))
    retriever.clock = lambda: datetime(2026, 1, 1, tzinfo=UTC)
    off = {}
    for tenant, newer in (("acme", "handbook/2025"), ("globex", "handbook/2023")):
        who = Principal("t", tenant, ("eng",))
        for mode in ("hybrid", "dense", "sparse"):
            plain = retriever.retrieve(who, FACT_QUERY, 2, mode)
            assert {h.payload["doc_id"] for h in plain} == set(FACT)
            off[tenant, mode] = plain[0].payload["doc_id"]
            fresh = retriever.retrieve(
                who, FACT_QUERY, 2, mode, stages=Stages(recency_s=half_life_s("90d"))
            )
            assert fresh[0].payload["doc_id"] == newer, (tenant, mode)
            assert fresh[0].payload["event_time"].startswith("2025-11-20")
    # The texts alone put the same document first for both tenants: recency moved one.
    assert off["acme", "hybrid"] == off["globex", "hybrid"]


# --- diversity with section grouping ---------------------------------------------------------

RANDOM = "# Random numbers\n\n" + "\n\n".join(
    f"## Generator {i}\n\nGenerate random numbers with generator {i}: call random() to "
    f"draw a random number, seed it for repeatable random sequences."
    for i in range(8)
)
OTHERS = {
    "crypto": "# Secrets\n\n## Tokens\n\nUse the secrets module for random tokens and "
    "passwords; random numbers from it are safe for cryptography.",
    "uuid": "# Identifiers\n\n## UUID4\n\nuuid4() makes a random identifier from random bits.",
    "sampling": "# Sampling\n\n## Choosing items\n\nPick random items from a list with "
    "choice() or sample() to shuffle data.",
    "tests": "# Tests\n\n## Fake data\n\nFactories fill models with random but valid values.",
}


def _sections(hits: list[SearchHit]) -> list[tuple]:
    return [(h.payload["doc_id"], h.payload.get("section")) for h in hits]


@pytest.mark.model
def test_diversity_spreads_the_hits_and_still_returns_top_k_sections(index, dense, sparse):
    make_indexer(index, dense, sparse).apply(
        [upsert("random", RANDOM, 1, tenant="acme", acl=["eng"])]
        + [upsert(d, t, 1, tenant="acme", acl=["eng"]) for d, t in OTHERS.items()]
    )
    retriever = Retriever(index, dense, sparse)
    query = "How do I generate random numbers?"
    for mode in ("hybrid", "dense", "sparse"):
        plain = retriever.retrieve(WHO, query, 5, mode)
        diverse = retriever.retrieve(WHO, query, 5, mode, stages=Stages(diversity=0.7))
        assert len(diverse) == 5 and len(set(_sections(diverse))) == 5, mode
        pages = {h.payload["doc_id"] for h in diverse}
        assert len(pages) > len({h.payload["doc_id"] for h in plain}), mode


LONG = {
    f"long{n}": f"# Long {n}\n\n## Body\n\n"
    + " ".join(
        f"Random numbers come from a generator; part {n}.{i} explains seeds and draws."
        for i in range(60)
    )
    for n in range(2)
}


@pytest.mark.model
def test_diversity_asks_for_more_chunks_when_they_fill_fewer_than_top_k_sections(
    edge_index, dense, sparse
):
    """Two long sections hold every chunk near the query: the first search's chunks fall
    in 2 sections, so the read path asks again for more until it has top_k of them."""
    make_indexer(edge_index, dense, sparse, chunk_size=32).apply(
        [upsert(d, t, 1, tenant="acme", acl=["eng"]) for d, t in LONG.items()]
        + [upsert(d, t, 1, tenant="acme", acl=["eng"]) for d, t in OTHERS.items()]
    )
    ranking = replace(DEFAULT_RANKING, candidates=6)
    retriever = Retriever(edge_index, dense, sparse, ranking)
    query = "random number generator seeds"
    first = edge_index.search(
        "dense", dense.encode_query(query), None, MUST, 9, diversity=Diversity(0.01, 36)
    )
    assert len({h.payload["doc_id"] for h in first}) <= 2, "the case needs full long sections"
    hits = retriever.retrieve(WHO, query, 3, "dense", stages=Stages(diversity=0.01))
    assert len(set(_sections(hits))) == 3
