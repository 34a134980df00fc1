"""The ranking stages over HTTP (issue 28): every new field of /retrieve and /answer is in
the OpenAPI document with its limits, a bad value is a 422 naming the field, the Python
client sends them, a reranker's time is in the response, and an LLM rerank is budgeted
and billed to the key that asked, like an answer."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from freshrag.runtime import ServerThread
from freshrag_client import Client
from tests.conftest import free_port, make_indexer, make_services, make_settings, upsert
from tests.llm_servers import ScriptedLLM
from tests.retrieval.test_rerank import DOCS, QUERY, make_cross_encoder

pytestmark = pytest.mark.model

KEYS = {
    "key-a": {"tenant": "acme", "groups": ["eng"], "name": "alice"},
    "key-poor": {
        "tenant": "acme",
        "groups": ["eng"],
        "name": "poor",
        "limits": {"tokens_per_day": 1},
    },
    "key-admin": {"tenant": "ops", "groups": [], "name": "root", "admin": True},
}
A = {"X-API-Key": "key-a"}
STAGES = {
    "fusion": "dbsf",
    "dense_weight": 1.5,
    "sparse_weight": 0.5,
    "diversity": 0.3,
    "recency": "30d",
    "rerank_candidates": 12,
}


def indexed(tmp_path, index, dense, sparse, **overrides):  # noqa: ANN001, ANN003, ANN201
    settings = make_settings(tmp_path, api_keys=KEYS, answer_require_names=False, **overrides)
    make_indexer(index, dense, sparse).apply(
        [upsert(d, t, 1, tenant="acme", acl=["eng"]) for d, t in DOCS.items()]
    )
    return settings, make_services(settings, index, dense, sparse)


def test_the_stages_are_documented_validated_and_sent_by_the_client(
    tmp_path, edge_index, dense, sparse
):
    _, services = indexed(tmp_path, edge_index, dense, sparse)
    app = create_app(services)
    with TestClient(app) as http:
        doc = http.get("/openapi.json").json()
        schemas = doc["components"]["schemas"]
        for name in ("RetrieveRequest", "AnswerRequest"):
            props = schemas[name]["properties"]
            ok = {p: [s for s in props[p]["anyOf"] if s.get("type") != "null"][0] for p in STAGES}
            assert ok["fusion"]["enum"] == ["rrf", "dbsf"]
            assert (ok["dense_weight"]["minimum"], ok["dense_weight"]["maximum"]) == (0.01, 100)
            assert (ok["diversity"]["minimum"], ok["diversity"]["maximum"]) == (0, 1)
            assert ok["recency"]["pattern"].startswith("^(?:off|")
            assert (ok["rerank_candidates"]["minimum"], ok["rerank_candidates"]["maximum"]) == (
                1,
                100,
            )
            # No reranker on this server: the document allows only false.
            rerank = [s for s in props["rerank"]["anyOf"] if s.get("type") == "boolean"][0]
            assert rerank["enum"] == [False]
        for path in ("/retrieve", "/answer"):
            body = {"query": QUERY, "cache": False} if path == "/answer" else {"query": QUERY}
            r = http.post(path, json={**body, **STAGES, "rerank": False}, headers=A)
            assert r.status_code == 200, r.text
            for field, bad in [
                ("fusion", "max"),
                ("dense_weight", 0),
                ("sparse_weight", 101),
                ("dense_weight", "2"),
                ("diversity", 1.5),
                ("diversity", True),
                ("recency", "30 days"),
                ("recency", "0d"),
                ("recency", 30),
                ("rerank", True),
                ("rerank_candidates", 0),
                ("rerank_candidates", 101),
                ("rerank_candidates", 2.5),
            ]:
                r = http.post(path, json={**body, field: bad}, headers=A)
                assert r.status_code == 422, (path, field, bad, r.text)
                assert [e["loc"] for e in r.json()["detail"]] == [["body", field]], r.text
        hits = http.post("/retrieve", json={"query": QUERY, **STAGES}, headers=A).json()
    # The client sends the same fields and gets the same hits.
    api = ServerThread(app, "127.0.0.1", free_port()).start()
    try:
        with Client(api.url, "key-a") as client:
            got = client.retrieve(QUERY, **STAGES)  # type: ignore[arg-type]
            assert [h.model_dump() for h in got.hits] == [
                {**h, "score": pytest.approx(h["score"])} for h in hits["hits"]
            ]
            answer = client.answer(QUERY, cache=False, recency="off", fusion="rrf")
            assert answer.citations
    finally:
        api.stop()


def test_a_cross_encoder_reranks_and_reports_its_time(tmp_path, edge_index, dense, sparse):
    folder = make_cross_encoder(tmp_path / "ce")
    _, services = indexed(
        tmp_path,
        edge_index,
        dense,
        sparse,
        reranker=f"cross-encoder:{folder}",
        rerank_max_tokens=64,
    )
    with TestClient(create_app(services)) as http:
        props = http.get("/openapi.json").json()["components"]["schemas"]["RetrieveRequest"]
        assert {"type": "boolean"} in props["properties"]["rerank"]["anyOf"]
        body = {"query": QUERY, "group": "chunk", "top_k": 10}  # every candidate reranked
        on = http.post("/retrieve", json=body, headers=A).json()
        off = http.post("/retrieve", json={**body, "rerank": False}, headers=A).json()
        assert on["timings"]["rerank_ms"] > 0 and off["timings"] == {}

        def order(reply: dict) -> list[tuple]:
            return [(h["doc_id"], h["chunk_index"]) for h in reply["hits"]]

        assert order(on) != order(off) and sorted(order(on)) == sorted(order(off))
        answer = http.post("/answer", json={"query": QUERY, "cache": False}, headers=A).json()
        assert answer["timings"]["rerank_ms"] > 0


def usage_of(http: Any, name: str, calls: int) -> dict[str, Any]:
    """`name`'s usage row once its `calls` are written (the ledger writes off the path)."""
    deadline = time.monotonic() + 10
    while True:
        report = http.get("/usage", headers={"X-API-Key": "key-admin"}).json()
        row = {k["key_name"]: k for k in report["keys"]}.get(name, {})
        if row.get("calls", 0) >= calls or time.monotonic() > deadline:
            return row
        time.sleep(0.05)


def test_an_llm_rerank_is_budgeted_and_billed_to_the_key_that_asked(
    tmp_path, edge_index, dense, sparse
):
    llm = ScriptedLLM("openai", default=("ok", "[2] [1]")).start()
    chain = [{"kind": "openai", "base_url": llm.base_url, "model": "ranker-1", "retries": 0}]
    _, services = indexed(
        tmp_path, edge_index, dense, sparse, llm_chain=chain, reranker="llm", rerank_candidates=2
    )
    api = ServerThread(create_app(services), "127.0.0.1", free_port()).start()
    try:
        with httpx.Client(base_url=api.url, timeout=30) as http:
            body = {"query": QUERY, "group": "chunk", "top_k": 3}
            off = http.post("/retrieve", json={**body, "rerank": False}, headers=A).json()
            assert llm.requests == []
            on = http.post("/retrieve", json=body, headers=A).json()
            assert len(llm.requests) == 1 and on["timings"]["rerank_ms"] > 0
            first, second = off["hits"][:2]
            assert [h["doc_id"] for h in on["hits"][:2]] == [second["doc_id"], first["doc_id"]]
            assert on["hits"][2]["doc_id"] == off["hits"][2]["doc_id"]
            alice = usage_of(http, "alice", 1)
            assert alice["calls"] == 1 and alice["input_tokens"] > 0
            # A spent budget is a 429 before any provider call; without rerank it searches.
            http.post("/retrieve", json=body, headers={"X-API-Key": "key-poor"})
            r = http.post("/retrieve", json=body, headers={"X-API-Key": "key-poor"})
            assert r.status_code == 429, r.text
            calls = len(llm.requests)
            r = http.post(
                "/retrieve", json={**body, "rerank": False}, headers={"X-API-Key": "key-poor"}
            )
            assert r.status_code == 200 and len(llm.requests) == calls
    finally:
        api.stop()
        llm.stop()
