"""The HTTP API on a real Edge index: auth, validation, tenancy, ACL, document versions,
and /answer streamed over real HTTP (uvicorn) from a provider streaming its protocol."""

import json
import re
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import Services, create_app
from api.auth import KeyStore
from api.models import AnswerResponse
from freshrag.runtime import ServerThread, broker_reachable
from retrieval.search import Retriever
from tests.conftest import (
    delete,
    free_port,
    make_indexer,
    make_services,
    make_settings,
    upsert,
    wait_for,
)
from tests.llm_servers import ScriptedLLM

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
    assert r.status_code == 202 and "indexed: version 2" in r.json()["detail"]
    assert r.json()["version"] == 2 and r.json()["min_version"] == 9

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


# --- /answer streamed over real HTTP ---------------------------------------------------------

RUNBOOK = (
    "# Worker runbook\n\n## Stopping\n\nTo stop the ingest worker cleanly, send it SIGTERM. "
    "It finishes the batch in hand, commits offsets and leaves the consumer group."
)
QUESTION = "How do I stop the ingest worker cleanly?"


@pytest.fixture
def stream_api(tmp_path, edge_index, dense, sparse):
    """Starts the API (uvicorn) over the runbook, its chain a scripted OpenAI-compatible
    server then the extractive provider (or `chain`); returns (api, llm)."""
    started = []

    def start(chain=None, **overrides):
        llm = ScriptedLLM("openai").start()
        started.append(llm)
        primary = {"kind": "openai", "base_url": llm.base_url, "model": "m", "retries": 0}
        chain = chain or [primary, {"kind": "extractive"}]
        settings = make_settings(
            tmp_path, llm_chain=[primary if c == "primary" else c for c in chain], **overrides
        )
        make_indexer(edge_index, dense, sparse).apply(
            [upsert("runbook", RUNBOOK, 1, tenant="acme", acl=["eng"])]
        )
        services = make_services(settings, edge_index, dense, sparse)
        api = ServerThread(create_app(services), "127.0.0.1", free_port()).start()
        started.append(api)
        return api, llm

    yield start
    for thing in reversed(started):
        thing.stop()


def sse(response):
    """(event, data, arrival) per event of an event stream, arrival on time.monotonic()."""
    event, data = None, []
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])
        elif not line and event is not None:
            yield event, json.loads("\n".join(data)), time.monotonic()
            event, data = None, []


def ask_streaming(api, **body):
    with (
        httpx.Client(base_url=api.url, timeout=30) as http,
        http.stream(
            "POST", "/answer", json={"query": QUESTION, "stream": True, **body}, headers=A
        ) as r,
    ):
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        return list(sse(r))


def test_answer_streams_tokens_as_the_provider_produces_them(stream_api):
    api, llm = stream_api()
    # The provider pauses a second after its first token: the client must have it by then.
    llm.script = [("stream", ["To stop the worker, ", "send it SIGTERM ", "[1]."], [0, 1.0, 0])]
    events = ask_streaming(api)
    provider = llm.requests[0]
    kinds = [kind for kind, _, _ in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"delta"}
    first = events[0]
    assert first[1] == {"text": "To stop the worker,"}
    # Target: within 50 ms of the provider's first token (bench); here, well inside the pause.
    assert first[2] - provider["first_chunk_at"] < 0.25
    assert first[2] < provider["done_at"] - 0.5
    done = events[-1][1]
    text = "".join(data["text"] for _, data, _ in events[:-1])
    assert text == done["answer"] == "To stop the worker, send it SIGTERM [1]."
    assert (done["provider"], done["model"], done["refused"], done["cached"]) == (
        "openai",
        "m",
        False,
        False,
    )
    assert done["prompt"].startswith("grounded-answer@")
    assert [(c["n"], c["doc_id"], c["version"]) for c in done["citations"]] == [(1, "runbook", 1)]
    timings = done["timings"]
    assert {"embed_ms", "retrieve_ms", "first_token_ms", "generate_ms", "total_ms"} <= set(timings)
    assert timings["first_token_ms"] < timings["total_ms"] - 500

    # The JSON answer keeps its shape.
    llm.script = [("ok", "Send it SIGTERM [1].")]
    r = httpx.post(f"{api.url}/answer", json={"query": QUESTION, "cache": False}, headers=A)
    assert r.status_code == 200 and set(r.json()) == set(AnswerResponse.model_fields)
    assert r.json()["answer"] == "Send it SIGTERM [1]." and "stream" not in llm.requests[-1]["body"]


def test_answer_stream_resets_when_a_provider_cites_outside_its_sources(stream_api):
    api, llm = stream_api()
    llm.script = [("stream", ["Send it SIGTERM ", "[1]. ", "Or restart it ", "[9]."], 0)]
    events = ask_streaming(api)
    kinds = [kind for kind, _, _ in events]
    cut = kinds.index("reset")
    assert set(kinds[:cut]) == {"delta"} and kinds[-1] == "done"
    before = "".join(data["text"] for _, data, _ in events[:cut])
    assert before == "Send it SIGTERM [1]. Or restart it" and "[9]" not in before
    reset = events[cut][1]
    assert (reset["provider"], reset["reason"]) == ("openai", "invalid_citations")
    assert "[9]" in reset["detail"]
    # The next provider streams its own answer: extractive, a cited sentence per delta.
    after = [data["text"] for kind, data, _ in events[cut + 1 : -1]]
    assert after and all(kind == "delta" for kind, _, _ in events[cut + 1 : -1])
    assert all(re.search(r"\[\d+\]$", piece) for piece in after)
    done = events[-1][1]
    assert done["provider"] == "extractive" and "".join(after) == done["answer"]
    assert [(a["provider"], a["outcome"]) for a in done["attempts"]] == [
        ("openai", "invalid_citations"),
        ("extractive", "served"),
    ]


def test_a_client_that_disconnects_cancels_the_provider_call(stream_api):
    api, llm = stream_api()
    chunks = ["To stop the worker, send it SIGTERM [1]. "] + ["It drains. "] * 100
    llm.script = [("stream", chunks, 0.1)]
    body = {"query": QUESTION, "stream": True}
    with (
        httpx.Client(base_url=api.url, timeout=30) as http,
        http.stream("POST", "/answer", json=body, headers=A) as r,
    ):
        for line in r.iter_lines():
            if line.startswith("data: "):
                break  # the first delta: now hang up (leaving the block closes the response)
        left_at = time.monotonic()
    provider = llm.requests[0]
    wait_for(lambda: "closed_at" in provider, timeout=3.0, interval=0.02)
    assert provider["closed_at"] - left_at < 1.0
    assert "done_at" not in provider


def test_a_cached_answer_streams_at_once(stream_api):
    api, llm = stream_api()
    llm.script = [("ok", "Send it SIGTERM [1].")]
    first = ask_streaming(api)
    assert first[-1][0] == "done" and first[-1][1]["cached"] is False
    again = ask_streaming(api)
    assert [kind for kind, _, _ in again] == ["delta", "done"]
    done = again[-1][1]
    assert (
        done["cached"] is True and again[0][1]["text"] == done["answer"] == "Send it SIGTERM [1]."
    )
    assert len(llm.requests) == 1


def test_a_deadline_that_runs_out_mid_stream_ends_it_with_an_error_event(stream_api):
    api, llm = stream_api(chain=["primary"], answer_deadline_s=1.5)
    llm.script = [("stream", ["Send it ", "SIGTERM [1]."], [0, 10.0])]
    started = time.monotonic()
    events = ask_streaming(api)
    assert time.monotonic() - started < 3.0
    assert [kind for kind, _, _ in events] == ["delta", "reset", "error"]
    assert events[1][1]["reason"] == "deadline"
    error = events[2][1]
    assert error["status"] == 504 and "deadline of 1.50s" in error["detail"]
