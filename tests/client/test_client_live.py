"""The client and the LlamaIndex and LangChain retrievers against the real service (real
HTTP, uvicorn, a real index and encoders, answers from a local OpenAI-protocol server):
each returns exactly what /retrieve returns, a key of another tenant sees nothing of
tenant A, a streamed answer arrives as deltas then done, and errors carry the message."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest

from api.app import create_app
from freshrag.runtime import ServerThread
from freshrag_client import (
    AnswerDelta,
    AnswerResponse,
    AsyncClient,
    Client,
    NotFound,
    TimedOut,
    Unauthorized,
    ValidationFailed,
)
from freshrag_client.langchain import FreshRAGRetriever as LangChainRetriever
from freshrag_client.llamaindex import FreshRAGRetriever as LlamaIndexRetriever
from tests.conftest import free_port, make_indexer, make_services, make_settings, upsert
from tests.llm_servers import ScriptedLLM

pytestmark = pytest.mark.model

ANSWER = "Send it SIGTERM [1]."
ACME = {
    "runbook": "# Worker runbook\n\n## Stopping\n\nTo stop the ingest worker cleanly, send it "
    "SIGTERM. It finishes the batch in hand and commits offsets.\n\n## Restarting\n\nA "
    "restarted worker resumes from the committed offsets of its consumer group.",
    "guides/retention": "# Retention\n\n## Old versions\n\nThe zircon ledger keeps every "
    "superseded version for thirty days before compaction removes it.",
    "guides/keys": "# API keys\n\n## Rotation\n\nRotate a key by adding the new one to the "
    "keys file, deploying, then removing the old one.",
}
GLOBEX = {
    "globex/runbook": "# Globex runbook\n\n## Stopping\n\nGlobex workers stop on SIGINT "
    "after draining their queue.",
}
QUERIES: list[dict[str, Any]] = [
    {"query": "How do I stop the ingest worker?"},
    {"query": "stop worker offsets", "mode": "dense", "top_k": 2},
    {"query": "zircon ledger compaction", "mode": "sparse", "group": "chunk"},
    {"query": "keys and versions", "filters": {"doc_id": {"prefix": "guides/"}}, "top_k": 10},
]


@pytest.fixture
def service(tmp_path, edge_index, dense, sparse):
    """(url, indexer): the API over an index holding ACME's and Globex's documents."""
    llm = ScriptedLLM("openai", default=("ok", ANSWER)).start()
    primary = {"kind": "openai", "base_url": llm.base_url, "model": "gpt-x", "retries": 0}
    settings = make_settings(tmp_path, llm_chain=[primary], answer_require_names=False)
    indexer = make_indexer(edge_index, dense, sparse)
    indexer.apply(
        [upsert(d, t, 1, tenant="acme", acl=["eng"]) for d, t in ACME.items()]
        + [upsert(d, t, 1, tenant="globex", acl=["eng"]) for d, t in GLOBEX.items()]
    )
    services = make_services(settings, edge_index, dense, sparse)
    api = ServerThread(create_app(services), "127.0.0.1", free_port()).start()
    yield api.url, indexer
    api.stop()
    llm.stop()


def raw_retrieve(url: str, key: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    r = httpx.post(f"{url}/retrieve", json=body, headers={"X-API-Key": key}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["hits"]


def through_every_integration(url: str, key: str, body: dict[str, Any]) -> dict[str, list]:
    """The same search through the client and both retrievers, sync and async, as
    (id, text, score, metadata) rows in the order each returned them."""
    query, params = body["query"], {k: v for k, v in body.items() if k != "query"}
    out: dict[str, list] = {}
    with Client(url, key) as client:
        out["client"] = [
            _row(h.model_dump(mode="json")) for h in client.retrieve(query, **params).hits
        ]
        nodes = LlamaIndexRetriever(client, **params).retrieve(query)
        out["llamaindex"] = [_node(n) for n in nodes]
        docs = LangChainRetriever(client=client, **params).invoke(query)
        out["langchain"] = [_doc(d) for d in docs]

    async def go() -> None:
        async with AsyncClient(url, key) as aclient:
            found = await aclient.retrieve(query, **params)
            out["async client"] = [_row(h.model_dump(mode="json")) for h in found.hits]
            nodes = await LlamaIndexRetriever(async_client=aclient, **params).aretrieve(query)
            out["llamaindex async"] = [_node(n) for n in nodes]
            docs = await LangChainRetriever(async_client=aclient, **params).ainvoke(query)
            out["langchain async"] = [_doc(d) for d in docs]

    asyncio.run(go())
    return out


def _row(hit: dict[str, Any]) -> tuple:
    meta = {k: v for k, v in hit.items() if k != "text"}
    return (
        f"{hit['doc_id']}@{hit['version']}#{hit['chunk_index']}",
        hit["text"],
        hit["score"],
        meta,
    )


def _node(n: Any) -> tuple:
    return (n.node.node_id, n.node.text, n.score, n.node.metadata)


def _doc(d: Any) -> tuple:
    return (d.id, d.page_content, d.metadata["score"], d.metadata)


def test_every_integration_returns_exactly_what_retrieve_returns(service):
    url, _ = service
    for body in QUERIES:
        expected = [_row(h) for h in raw_retrieve(url, "key-a", body)]
        assert expected, body
        for name, rows in through_every_integration(url, "key-a", body).items():
            assert rows == expected, (name, body)
    # What the metadata carries, spelled out once.
    [row] = [r for r in expected if r[3]["doc_id"] == "guides/retention"]
    meta = row[3]
    assert meta["version"] == 1 and meta["section"] == "Old versions"
    assert meta["path"] == ["Retention"] and meta["indexed_at"] and meta["score"] == row[2]


def test_a_key_of_another_tenant_gets_nothing_of_tenant_a_through_any_integration(service):
    url, _ = service
    for body in [*QUERIES, {"query": "zircon ledger SIGTERM worker runbook", "top_k": 50}]:
        everyone = through_every_integration(url, "key-b", body)
        raw = raw_retrieve(url, "key-b", body)
        for name, rows in {**everyone, "raw": [_row(h) for h in raw]}.items():
            assert {r[3]["doc_id"] for r in rows} <= set(GLOBEX), (name, body)
    with Client(url, "key-b") as client:
        assert [h.doc_id for h in client.retrieve("runbook stopping").hits] == ["globex/runbook"]
        with pytest.raises(NotFound):
            client.document("runbook")
    with Client(url, "key-a") as client:
        assert client.document("runbook").version == 1


def test_a_streamed_answer_arrives_as_deltas_then_done(service):
    url, _ = service
    question = "How do I stop the ingest worker cleanly?"
    with Client(url, "key-a") as client, client.answer(question, stream=True, cache=False) as s:
        events = list(s)
    *deltas, done = events
    assert len(deltas) > 1 and all(isinstance(e, AnswerDelta) for e in deltas)
    assert isinstance(done, AnswerResponse) and done.provider == "openai"
    assert "".join(d.text for d in deltas) == done.answer == ANSWER
    assert [c.doc_id for c in done.citations] == ["runbook"]
    assert "first_token_ms" in done.timings

    async def go() -> tuple[list, AnswerResponse]:
        async with AsyncClient(url, "key-a") as aclient:
            stream = await aclient.answer(question, stream=True, cache=False)
            async with stream:
                got = [e async for e in stream]
            return got, await aclient.answer(question, cache=False)

    got, whole = asyncio.run(go())
    assert [type(e) for e in got] == [type(e) for e in events]
    assert "".join(e.text for e in got[:-1]) == got[-1].answer == whole.answer == ANSWER


def test_providers_and_errors_carry_what_the_server_said(service):
    url, _ = service
    raw = httpx.get(f"{url}/providers", headers={"X-API-Key": "key-a"}).json()
    with Client(url, "key-a") as client:
        assert [p.model_dump() for p in client.providers()] == raw
        assert [p.name for p in client.providers()] == ["openai"]
        with pytest.raises(ValidationFailed) as bad:
            client.retrieve("x", top_k=0)
        with pytest.raises(ValidationFailed, match="provider"):
            client.answer("x", provider="nobody")
        with pytest.raises(NotFound, match="document 'missing/doc' is not indexed"):
            client.document("missing/doc")
    assert [e["loc"] for e in bad.value.errors] == [["body", "top_k"]]
    assert "top_k must be between 1 and" in bad.value.detail and bad.value.status == 422
    unknown = httpx.post(f"{url}/retrieve", json={"query": "x"}, headers={"X-API-Key": "nope"})
    with Client(url, "nope") as client, pytest.raises(Unauthorized) as who:
        client.retrieve("x")
    assert who.value.detail == unknown.json()["detail"] and who.value.status == 401


def test_wait_for_version_returns_once_the_version_is_searchable(service):
    url, indexer = service
    text = ACME["guides/keys"] + "\n\nKeys never expire on their own."
    later = threading.Timer(
        0.5, indexer.apply, [[upsert("guides/keys", text, 2, tenant="acme", acl=["eng"])]]
    )
    with Client(url, "key-a") as client:
        assert client.wait_for_version("runbook", 1, timeout=5).version == 1
        later.start()
        started = time.monotonic()
        try:
            assert client.wait_for_version("guides/keys", 2, timeout=20).version == 2
        finally:
            later.join()
        assert time.monotonic() - started < 10
        with pytest.raises(TimedOut, match=r"version 3 of 'guides/keys' not indexed in time"):
            client.wait_for_version("guides/keys", 3, timeout=1)
    hits = raw_retrieve(url, "key-a", {"query": "Keys never expire", "top_k": 1})
    assert (hits[0]["doc_id"], hits[0]["version"]) == ("guides/keys", 2)
