"""The ranking stages through `freshrag mcp` against the real service (issue 28): `search`
sends them as /retrieve takes them and they act (diversity spreads one page's sections
over several pages, recency puts the newer of two versions of a fact first), and a bad
value, or `rerank` on a server without a reranker, comes back as a tool error naming it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import upsert
from tests.mcp.conftest import over_http, serving
from tests.mcp.test_mcp_live import raw, search, without_timing
from tests.retrieval.test_ranking_stages import FACT, FACT_QUERY, OTHERS, RANDOM

pytestmark = pytest.mark.model

RANDOM_QUERY = "How do I generate random numbers?"
# Two tenants hold the same two versions of a fact, each the other one as the newer.
NEWER = {"acme": "handbook/2025", "globex": "handbook/2023"}
DATES = ("2024-01-10T00:00:00Z", "2025-11-20T00:00:00Z")


@pytest.fixture
def staged(tmp_path, edge_index, dense, sparse):  # noqa: ANN001, ANN201
    events = [upsert("random", RANDOM, 1, tenant="acme", acl=["eng"])]
    events += [upsert(d, t, 1, tenant="acme", acl=["eng"]) for d, t in OTHERS.items()]
    events += [
        upsert(d, t, 1, tenant=tenant, acl=["eng"], event_time=DATES[d == newer])
        for tenant, newer in NEWER.items()
        for d, t in FACT.items()
    ]
    with serving(tmp_path, edge_index, dense, sparse, events) as running:
        yield running


def pages(found: dict[str, Any]) -> list[str]:
    return [hit["doc_id"] for hit in found["hits"]]


def test_search_sends_the_stages_and_they_change_the_hits(staged):
    diverse = {"query": RANDOM_QUERY, "top_k": 5, "diversity": 0.7}
    # Dense: cosine scores, no ties whose order the engine may pick either way.
    fact = {"query": FACT_QUERY, "top_k": 2, "mode": "dense"}
    fresh = {**fact, "recency": "90d"}

    async def go() -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key in ("key-a", "key-b"):
            async with over_http(staged.mcp, key) as session:
                if key == "key-a":
                    found["plain"] = await search(session, {"query": RANDOM_QUERY, "top_k": 5})
                    found["diverse"] = await search(session, diverse)
                found[key, "fact"] = await search(session, fact)
                found[key, "fresh"] = await search(session, fresh)
        return found

    found = asyncio.run(go())
    # What /retrieve returns for the same bodies (recency: to within the clock's move).
    on_http = raw(staged.api, "key-a", "POST", "/retrieve", json=diverse).json()
    assert found["diverse"] == without_timing(on_http)
    for key in ("key-a", "key-b"):
        on_http = without_timing(raw(staged.api, key, "POST", "/retrieve", json=fresh).json())
        # The decay runs to now, which moved on between the two calls: scores nearly equal.
        for hit in on_http["hits"]:
            hit["score"] = pytest.approx(hit["score"], rel=1e-4)
        assert found[key, "fresh"] == on_http, key

    # Diversity: five distinct sections over more pages than the page of eight alike ones.
    spread = found["diverse"]["hits"]
    assert len({(h["doc_id"], h["section"]) for h in spread}) == 5
    assert len(set(pages(found["diverse"]))) > len(set(pages(found["plain"])))
    # Recency: the same texts put the same version first for both tenants; with a 90-day
    # half-life each tenant's newer version leads, so for one of them the stage moved it.
    plain = {key: pages(found[key, "fact"]) for key in ("key-a", "key-b")}
    assert set(plain["key-a"]) == set(FACT) and plain["key-a"] == plain["key-b"]
    for key, tenant in (("key-a", "acme"), ("key-b", "globex")):
        first = found[key, "fresh"]["hits"][0]
        assert first["doc_id"] == NEWER[tenant], key
        assert first["event_time"].startswith("2025-11-20")


def test_a_bad_stage_is_a_tool_error_naming_it(staged):
    no_reranker = raw(staged.api, "key-a", "POST", "/retrieve", json={"query": "x", "rerank": True})
    assert no_reranker.status_code == 422
    [error] = no_reranker.json()["detail"]
    assert error["loc"] == ["body", "rerank"]
    bad = {
        "search": [
            ({"rerank": True}, f"invalid arguments: rerank: {error['msg']}"),
            ({"recency": "30 days"}, "recency\n  recency must be 'off' or a half-life"),
            ({"fusion": "max"}, "fusion\n  Input should be 'rrf' or 'dbsf'"),
            ({"dense_weight": 0}, "dense_weight\n  Input should be greater than or equal to 0.01"),
            ({"rerank_candidates": 101}, "rerank_candidates\n  Input should be less than or"),
        ],
        "answer": [
            ({"diversity": 2}, "diversity\n  Input should be less than or equal to 1"),
            ({"rerank": True}, f"invalid arguments: rerank: {error['msg']}"),
        ],
    }

    async def go() -> None:
        async with over_http(staged.mcp, "key-a") as session:
            for tool, cases in bad.items():
                for arguments, said in cases:
                    result = await session.call_tool(tool, {"query": RANDOM_QUERY, **arguments})
                    assert result.is_error, (tool, arguments)
                    assert said in result.content[0].text, (tool, arguments, result.content)
            # With every stage set to a good value the search goes through.
            every = {
                "fusion": "dbsf",
                "dense_weight": 1.5,
                "sparse_weight": 0.5,
                "diversity": 0.3,
                "recency": "30d",
                "rerank": False,
                "rerank_candidates": 12,
            }
            assert (await search(session, {"query": RANDOM_QUERY, **every}))["hits"]

    asyncio.run(go())
