"""`freshrag mcp` against the real service, with the MCP SDK's own client over both
transports: `search` returns exactly what /retrieve returns, no key reads outside its
tenant and groups through search, answer or the document resource, a request without a
valid key is refused over HTTP, and bad arguments come back as errors naming them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from mcp import ClientSession, MCPError

from tests.mcp.conftest import MARKERS, READABLE, over_http, over_stdio

pytestmark = pytest.mark.model

QUERIES: list[dict[str, Any]] = [
    {"query": "How do I stop the ingest worker?"},
    {"query": "stop worker offsets", "mode": "dense", "top_k": 2},
    {"query": "zircon ledger compaction", "mode": "sparse", "group": "chunk"},
    {"query": "keys and versions", "filters": {"doc_id": {"prefix": "guides/"}}, "top_k": 10},
]
# Each aims at one tenant's or group's document; every key asks all of them.
PROBES = [
    "discount for strategic accounts",
    "Globex workers SIGINT",
    "How do I stop the ingest worker cleanly?",
    "zircon ledger and key rotation",
]
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def raw(api: str, key: str, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, f"{api}{path}", headers={"X-API-Key": key}, timeout=30, **kw)


def without_timing(found: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in found.items() if k != "took_ms"}


async def search(session: ClientSession, arguments: dict[str, Any]) -> dict[str, Any]:
    """The tool's structured output (its text content says the same)."""
    result = await session.call_tool("search", arguments)
    assert not result.is_error, result.content
    assert json.loads(result.content[0].text) == result.structured_content
    return without_timing(result.structured_content)


def doc_ids(found: dict[str, Any]) -> set[str]:
    return {hit["doc_id"] for hit in found["hits"]}


def test_search_returns_exactly_what_retrieve_returns_over_both_transports(service, tmp_path):
    expected = []
    for body in QUERIES:
        r = raw(service.api, "key-a", "POST", "/retrieve", json=body)
        assert r.status_code == 200 and r.json()["hits"], (body, r.text)
        expected.append(without_timing(r.json()))

    async def go() -> dict[str, list]:
        async with over_http(service.mcp, "key-a") as session:
            over_h = [await search(session, body) for body in QUERIES]
        async with over_stdio(service.api, "key-a", tmp_path) as session:
            over_s = [await search(session, body) for body in QUERIES]
        return {"streamable http": over_h, "stdio": over_s}

    for transport, found in asyncio.run(go()).items():
        assert found == expected, transport
    # What a hit carries, spelled out once.
    [hit] = [h for h in expected[2]["hits"] if h["doc_id"] == "guides/retention"]
    assert hit["version"] == 1 and hit["section"] == "Old versions" and hit["indexed_at"]


def test_no_key_reads_outside_its_tenant_and_groups(service):
    """Search, answer and the document resource, for keys of two tenants and of two
    groups of one tenant, all on one MCP server: each sees only what it may read on the
    API, the provider is never shown anything else, and an unreadable document reads
    exactly like one that was never indexed."""

    async def as_key(key: str, readable: set[str]) -> None:
        async with over_http(service.mcp, key) as session:
            seen: set[str] = set()
            for query in PROBES:
                seen |= doc_ids(await search(session, {"query": query, "top_k": 50}))
                answer = await session.call_tool("answer", {"query": query, "top_k": 50})
                assert not answer.is_error, answer.content
                cited = {c["doc_id"] for c in answer.structured_content["citations"]}
                assert cited <= readable, (key, query, cited)
            assert seen == readable, key  # everything readable is found, nothing else
            for doc_id in MARKERS:
                uri = f"freshrag://documents/{doc_id}"
                on_http = raw(service.api, key, "GET", f"/documents/{doc_id}")
                if doc_id in readable:
                    read = await session.read_resource(uri)
                    assert read.contents[0].mime_type == "application/json"
                    assert json.loads(read.contents[0].text) == on_http.json()
                    continue
                with pytest.raises(MCPError) as refused:
                    await session.read_resource(uri)
                assert on_http.status_code == 404
                assert refused.value.error.message == on_http.json()["detail"]
                assert refused.value.error.message == f"document '{doc_id}' is not indexed"

    for key, readable in READABLE.items():
        before = len(service.llm.requests)
        asyncio.run(as_key(key, readable))
        prompts = json.dumps([r["body"] for r in service.llm.requests[before:]])
        for doc_id, marker in MARKERS.items():
            assert (marker in prompts) == (doc_id in readable), (key, doc_id)


def test_one_http_server_serves_several_keys_and_binds_a_session_to_its_key(service):
    async def go() -> tuple[set[str], set[str]]:
        async with (
            over_http(service.mcp, "key-a") as a,
            over_http(service.mcp, "key-b") as b,
        ):
            query = {"query": "how do workers stop", "top_k": 50}
            found_a, found_b = await asyncio.gather(search(a, query), search(b, query))
            return doc_ids(found_a), doc_ids(found_b)

    ids_a, ids_b = asyncio.run(go())
    assert "runbook" in ids_a and ids_a <= READABLE["key-a"]
    assert ids_b == READABLE["key-b"]

    # A session opened with one key answers only requests carrying that key.
    opened = _post(service.mcp, "key-a", _initialize())
    assert opened.status_code == 200, opened.text
    session = {"mcp-session-id": opened.headers["mcp-session-id"]}
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    assert _post(service.mcp, "key-b", listing, session).status_code == 404
    assert _post(service.mcp, "key-a", listing, session).status_code == 200


def test_http_refuses_a_request_without_a_key_the_api_accepts(service):
    """Refused before any MCP message is read, with the API's own reason."""
    cases = {
        "no key": {},
        "unknown key": {"Authorization": "Bearer nope"},
        "not a bearer": {"Authorization": "Basic a2V5LWE="},
    }
    for case, headers in cases.items():
        on_api = httpx.post(f"{service.api}/retrieve", json={"query": "x"}, headers=headers)
        r = httpx.post(service.mcp, json=_initialize(), headers={**MCP_HEADERS, **headers})
        assert (r.status_code, on_api.status_code) == (401, 401), case
        assert r.json()["error_description"] == on_api.json()["detail"], case
        assert r.headers["www-authenticate"].startswith('Bearer error="invalid_token"'), case
    # The key as X-API-Key, as the API takes it, is accepted too.
    assert _post(service.mcp, None, _initialize(), {"X-API-Key": "key-b"}).status_code == 200

    async def connects(key: str | None) -> bool:
        connected = False
        try:
            async with over_http(service.mcp, key):
                connected = True
        except* MCPError:  # the SDK's client: "Server returned an error response"
            pass
        return connected

    assert asyncio.run(connects("key-b"))
    assert not asyncio.run(connects(None))
    assert not asyncio.run(connects("nope"))


def test_bad_arguments_give_errors_that_name_them(service):
    bad = {
        "search": [
            (
                {"query": "x", "top_k": 0},
                "invalid arguments: top_k: top_k must be between 1 and 100",
            ),
            ({"query": "x", "top_k": True}, "top_k\n  Input should be a valid integer"),
            (
                {"query": "x", "mode": "fuzzy"},
                "mode\n  Input should be 'hybrid', 'dense' or 'sparse'",
            ),
            ({"top_k": 3}, "query\n  Field required"),
            ({"query": "   "}, "invalid arguments: query is empty"),
            (
                {"query": "x", "filters": {"nope": 1}},
                "invalid arguments: filters.nope: unknown filter field 'nope'",
            ),
        ],
        "answer": [
            (
                {"query": "x", "top_k": 0},
                "invalid arguments: top_k: top_k must be between 1 and 100",
            ),
            ({"query": "x", "filters": {"version": "one"}}, "invalid arguments: filters.version"),
        ],
    }
    on_api = raw(service.api, "key-a", "POST", "/retrieve", json={"query": "x", "top_k": 0})
    assert on_api.json()["detail"][0]["msg"] == "top_k must be between 1 and 100"

    async def go() -> None:
        async with over_http(service.mcp, "key-a") as session:
            for tool, cases in bad.items():
                for arguments, said in cases:
                    result = await session.call_tool(tool, arguments)
                    assert result.is_error, (tool, arguments)
                    assert said in result.content[0].text, (tool, arguments, result.content)
            unknown = await session.call_tool("summarise", {"query": "x"})
            assert unknown.is_error and "Unknown tool: summarise" in unknown.content[0].text
            with pytest.raises(MCPError, match="Unknown resource"):
                await session.read_resource("freshrag://documents/../runbook")

    asyncio.run(go())


def test_stdio_uses_the_key_it_was_started_with_and_nothing_else(service, tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text("key-b\n")

    async def go() -> None:
        # FRESHRAG_API_KEY says key-a, the file key-b: the file wins, and only it is used.
        async with over_stdio(
            service.api, "key-a", tmp_path, "--api-key-file", str(key_file)
        ) as session:
            for query in PROBES:
                assert doc_ids(await search(session, {"query": query, "top_k": 50})) <= {
                    "globex/runbook"
                }
            with pytest.raises(MCPError, match="document 'runbook' is not indexed"):
                await session.read_resource("freshrag://documents/runbook")
        async with over_stdio(service.api, "nope", tmp_path) as session:
            result = await session.call_tool("search", {"query": "x"})
            assert result.is_error and "unknown API key (HTTP 401)" in result.content[0].text

    asyncio.run(go())


def _initialize() -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "tests", "version": "0"},
        },
    }


def _post(
    url: str, key: str | None, message: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(url, json=message, headers={**MCP_HEADERS, **auth, **(headers or {})})
