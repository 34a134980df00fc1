"""The HTTP API on a real Edge index: auth, validation, tenancy, ACL, document versions."""

import threading
import time

import pytest
from fastapi.testclient import TestClient

from api.app import Services, create_app
from api.auth import KeyStore
from freshrag.runtime import broker_reachable
from retrieval.search import Retriever
from tests.conftest import delete, make_indexer, make_settings, upsert

pytestmark = pytest.mark.model

A = {"Authorization": "Bearer key-a"}
A_SALES = {"X-API-Key": "key-a-sales"}
B = {"Authorization": "Bearer key-b"}


@pytest.fixture
def env(tmp_path, broker, edge_index, dense, sparse):
    settings = make_settings(tmp_path, broker, max_top_k=20, max_query_chars=200)
    indexer = make_indexer(edge_index, dense, sparse)
    indexer.apply(
        [
            upsert(
                "runbook",
                "# Runbook\n\nRestart the ingest worker with SIGTERM to drain it.",
                1,
                tenant="acme",
                acl=["eng"],
                metadata={"team": "search", "tier": 1},
            ),
            upsert(
                "pricing",
                "# Pricing\n\nThe enterprise plan restarts billing every quarter.",
                1,
                tenant="acme",
                acl=["sales"],
                metadata={"team": "sales", "tier": 2},
            ),
            upsert(
                "runbook",
                "# Runbook\n\nGlobex restarts its worker by pulling the plug.",
                1,
                tenant="globex",
                acl=["eng"],
            ),
        ]
    )
    services = Services(
        settings,
        edge_index,
        Retriever(edge_index, dense, sparse),
        KeyStore(settings.api_keys),
        lambda: broker_reachable(broker),
    )
    with TestClient(create_app(services)) as client:
        yield client, indexer


def retrieve(client, headers, **body):
    return client.post("/retrieve", json={"query": "restart the worker", **body}, headers=headers)


@pytest.mark.broker
def test_auth_is_required(env):
    client, _ = env
    assert retrieve(client, {}).status_code == 401
    r = retrieve(client, {"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["detail"] == "unknown API key"
    assert client.get("/documents/runbook").status_code == 401


@pytest.mark.broker
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"query": ""}, "query"),
        ({"query": "   "}, "empty"),
        ({"query": "x" * 201}, "limit is 200"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 21}, "between 1 and 20"),
        ({"mode": "fuzzy"}, "mode"),
        ({"filters": {"colour": "red"}}, "unknown filter field 'colour'"),
        ({"filters": {"tenant": "globex"}}, "API key"),
        ({"tenant": "globex"}, "tenant"),
    ],
)
def test_bad_requests_get_a_4xx_that_says_why(env, body, fragment):
    client, _ = env
    r = retrieve(client, A, **body)
    assert r.status_code == 422
    assert fragment in r.text


@pytest.mark.broker
@pytest.mark.parametrize("mode", ["hybrid", "dense", "sparse"])
def test_hits_carry_provenance_and_respect_tenant_and_acl(env, mode):
    client, _ = env
    hits = retrieve(client, A, mode=mode).json()["hits"]
    assert hits and {(h["doc_id"], h["version"]) for h in hits} == {("runbook", 1)}
    top = hits[0]
    assert "SIGTERM" in top["text"] and top["title"] == "Runbook"
    assert top["chunk_index"] >= 0 and top["indexed_at"] and top["event_time"]
    assert top["metadata"] == {"team": "search", "tier": 1}

    sales = retrieve(client, A_SALES, mode=mode).json()["hits"]
    assert {h["doc_id"] for h in sales} == {"pricing"}
    globex = retrieve(client, B, mode=mode).json()["hits"]
    assert globex and all("Globex" in h["text"] for h in globex)


@pytest.mark.broker
def test_metadata_filters(env):
    client, _ = env
    assert retrieve(client, A, filters={"metadata.team": "sales"}).json()["hits"] == []
    assert retrieve(client, A, filters={"metadata.tier": {"lte": 1}}).json()["hits"]
    assert retrieve(client, A, filters={"doc_id": ["runbook", "other"]}).json()["hits"]


@pytest.mark.broker
def test_documents_endpoint_reports_versions_and_waits(env):
    client, indexer = env
    info = client.get("/documents/runbook", headers=A).json()
    assert (info["version"], info["chunk_count"]) == (1, 1) and info["indexed_at"]
    assert client.get("/documents/missing", headers=A).status_code == 404
    assert client.get("/documents/pricing", headers=A).status_code == 404, "ACL hides it"
    assert client.get("/documents/pricing", headers=A_SALES).status_code == 200

    def later():
        time.sleep(0.5)
        indexer.apply(
            [
                upsert(
                    "runbook",
                    "# Runbook\n\nDrain the worker, then restart.",
                    2,
                    tenant="acme",
                    acl=["eng"],
                )
            ]
        )

    t = threading.Thread(target=later)
    t.start()
    started = time.monotonic()
    r = client.get("/documents/runbook", params={"min_version": 2, "wait": 10}, headers=A)
    t.join()
    assert r.status_code == 200 and r.json()["version"] == 2
    assert time.monotonic() - started < 9
    r = client.get("/documents/runbook", params={"min_version": 9, "wait": 0.3}, headers=A)
    assert r.status_code == 504 and "indexed: version 2" in r.json()["detail"]

    indexer.apply([delete("runbook", 3, tenant="acme", acl=["eng"])])
    r = client.get("/documents/runbook", headers=A)
    assert r.status_code == 404 and "deleted at version 3" in r.json()["detail"]
    assert retrieve(client, A).json()["hits"] == []


@pytest.mark.broker
def test_health_readiness_metrics_and_docs(env):
    client, _ = env
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {
        "broker": True,
        "qdrant": True,
        "model": True,
    }
    retrieve(client, A)
    assert "freshrag_api_request_seconds" in client.get("/metrics/").text
    assert client.get("/docs").status_code == 200
    assert "/retrieve" in client.get("/openapi.json").json()["paths"]


def test_readiness_fails_without_a_broker(tmp_path, edge_index, dense, sparse):
    settings = make_settings(tmp_path)
    services = Services(
        settings,
        edge_index,
        Retriever(edge_index, dense, sparse),
        KeyStore(settings.api_keys),
        lambda: broker_reachable("127.0.0.1:1"),
    )
    with TestClient(create_app(services)) as client:
        r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["detail"]["checks"]["broker"] is False


@pytest.mark.broker
def test_a_long_section_comes_back_once_unless_chunks_are_asked_for(env):
    client, indexer = env
    body = " ".join(
        f"Step {i}: the okapi ledger rotates its shard keys and reconciles the okapi counts."
        for i in range(40)
    )
    indexer.apply(
        [upsert("ledger", f"# Ledger\n\n## Rotation\n\n{body}", 1, tenant="acme", acl=["eng"])]
    )
    query = {
        "query": "okapi ledger shard key rotation",
        "top_k": 5,
        "filters": {"doc_id": "ledger"},
    }
    every = query | {"group": "chunk", "top_k": 20}
    chunks = client.post("/retrieve", json=every, headers=A).json()["hits"]
    assert len(chunks) > 1 and {h["section"] for h in chunks} == {"Rotation"}

    hits = client.post("/retrieve", json=query, headers=A).json()["hits"]
    assert len(hits) == 1
    (section,) = hits
    assert section["path"] == ["Ledger"] and section["section"] == "Rotation"
    assert sorted(section["chunks"]) == section["chunks"] and len(section["chunks"]) == len(chunks)
    assert section["text"].count("## Rotation") == 1 and "Step 0:" in section["text"]
    assert section["score"] == max(h["score"] for h in chunks)

    bad = client.post("/retrieve", json=query | {"group": "page"}, headers=A)
    assert bad.status_code == 422 and "group" in bad.text
