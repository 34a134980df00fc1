"""`freshrag mcp` without the service: what the tools and resource declare, how the key
gate refuses (no key: before asking anyone; an API that does not answer: 503, never let
through), the API's errors as a caller reads them, and the command's key handling."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from click.testing import CliRunner
from mcp.server.mcpserver.exceptions import ToolError

from api.models import request_models
from freshrag.cli import cli
from freshrag.mcp.api import Api, message
from freshrag.mcp.keys import fixed_key, presented_key
from freshrag.mcp.server import DOCUMENT_URI, build_server
from freshrag.mcp.transports import http_app
from freshrag_client import NotFound, ValidationFailed
from tests.conftest import free_port

pytestmark = pytest.mark.unit

INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}
STAGES = (
    "fusion",
    "dense_weight",
    "sparse_weight",
    "diversity",
    "recency",
    "rerank",
    "rerank_candidates",
)


def test_the_tools_and_the_resource_say_what_they_take_and_return():
    server = build_server(Api("http://127.0.0.1:1"), fixed_key("k"))

    async def listed():  # noqa: ANN202
        return await server.list_tools(), await server.list_resource_templates()

    tools, templates = asyncio.run(listed())
    by_name = {t.name: t for t in tools}
    assert set(by_name) == {"search", "answer"}
    search = by_name["search"]
    assert search.input_schema["required"] == ["query"]
    props = search.input_schema["properties"]
    assert set(props) == {"query", "filters", "mode", "top_k", "group", *STAGES}
    assert set(by_name["answer"].input_schema["properties"]) >= set(STAGES)
    assert {"enum": ["hybrid", "dense", "sparse"], "type": "string"} in props["mode"]["anyOf"]
    assert set(search.output_schema["properties"]) == {"hits", "mode", "took_ms", "timings"}
    assert "citations" in by_name["answer"].output_schema["properties"]
    assert all(t.annotations.read_only_hint for t in tools)
    assert [t.uri_template for t in templates] == [DOCUMENT_URI]
    assert templates[0].mime_type == "application/json"


def test_the_key_is_read_as_the_api_reads_it():
    read = presented_key
    assert read(httpx.Headers({"Authorization": "Bearer  k1 "})) == ("k1", "")
    assert read(httpx.Headers({"authorization": "bearer k1"})) == ("k1", "")
    assert read(httpx.Headers({"X-API-Key": "k2", "Authorization": "Bearer k1"})) == ("k2", "")
    assert read(httpx.Headers({}))[0] is None
    key, why = read(httpx.Headers({"Authorization": "Basic abc"}))
    assert key is None and "must be 'Bearer <key>'" in why
    assert read(httpx.Headers({"Authorization": "Bearer "}))[0] is None


def _gate_reply(app, headers: dict[str, str]) -> httpx.Response:  # noqa: ANN001
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            return await c.post("/mcp", json=INITIALIZE, headers=headers)

    return asyncio.run(go())


def test_the_gate_refuses_without_a_key_and_when_the_api_cannot_say():
    app = http_app(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    missing = _gate_reply(app, {})
    assert missing.status_code == 401
    assert missing.json() == {
        "error": "invalid_token",
        "error_description": "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'",
    }
    assert missing.headers["www-authenticate"].startswith('Bearer error="invalid_token"')
    down = _gate_reply(app, {"Authorization": "Bearer some-key"})
    assert down.status_code == 503 and down.headers["retry-after"] == "5"
    assert "does not answer" in down.json()["error_description"]


def test_api_errors_read_as_the_tool_took_its_arguments():
    body = {
        "detail": [
            {"loc": ["body", "top_k"], "msg": "top_k must be between 1 and 100", "type": "x"},
            {"loc": ["body", "filters", "nope"], "msg": "unknown filter field", "type": "y"},
        ]
    }
    invalid = ValidationFailed(422, "…", body=body)
    assert message(invalid) == (
        "invalid arguments: top_k: top_k must be between 1 and 100; "
        "filters.nope: unknown filter field"
    )
    missing = NotFound(404, "document 'x' is not indexed", body={"detail": "…"})
    assert message(missing) == "document 'x' is not indexed (HTTP 404)"


def test_the_command_wants_one_key_on_stdio_and_none_on_http(tmp_path, monkeypatch):
    monkeypatch.delenv("FRESHRAG_API_KEY", raising=False)
    runner = CliRunner()
    no_key = runner.invoke(cli, ["mcp"])
    assert no_key.exit_code == 2
    assert "no API key: set FRESHRAG_API_KEY or pass --api-key-file" in no_key.output
    empty = tmp_path / "key"
    empty.write_text("\n")
    blank = runner.invoke(cli, ["mcp", "--api-key-file", str(empty)])
    assert blank.exit_code == 2 and "holds no API key" in blank.output
    on_http = runner.invoke(cli, ["mcp", "--transport", "http", "--api-key-file", str(empty)])
    assert on_http.exit_code == 2
    assert "--api-key-file is for stdio: over HTTP every request sends its own key" in (
        on_http.output
    )
    hosts = runner.invoke(cli, ["mcp", "--allowed-host", "mcp.example:443"])
    assert hosts.exit_code == 2 and "--allowed-host is for --transport http" in hosts.output


def _typed(schema: dict) -> list[dict]:
    """A property's schema without its words (title, description, default)."""
    words = {"title", "description", "default"}
    return [{k: v for k, v in s.items() if k not in words} for s in schema["anyOf"]]


def test_the_ranking_stages_take_what_the_api_takes_and_refuse_the_rest_before_asking():
    """The stages are the API's own field types (api/ranking.py): the same schema as
    /retrieve's on a server with a reranker, and a bad value is a tool error naming the
    argument in the API's words, raised before any request (nothing listens at the URL:
    a value that passes gets as far as trying to connect)."""
    server = build_server(Api(f"http://127.0.0.1:{free_port()}"), fixed_key("k"))
    retrieve, _ = request_models(1000, 100, reranker=True)
    on_http = retrieve.model_json_schema()["properties"]

    async def call(arguments: dict) -> str:
        with pytest.raises(ToolError) as failed:
            await server.call_tool("search", {"query": "x", **arguments})
        return str(failed.value)

    async def go() -> None:
        tools = {t.name: t for t in await server.list_tools()}
        for tool in ("search", "answer"):
            props = tools[tool].input_schema["properties"]
            for name in STAGES:
                assert _typed(props[name]) == _typed(on_http[name]), (tool, name)
                assert props[name]["description"] == on_http[name]["description"]
        bad = [
            ("fusion", "max", "Input should be 'rrf' or 'dbsf'"),
            ("dense_weight", 0, "greater than or equal to 0.01"),
            ("sparse_weight", 101, "less than or equal to 100"),
            ("dense_weight", "2", "Input should be a valid number"),
            ("diversity", 1.5, "less than or equal to 1"),
            ("diversity", True, "Input should be a valid number"),
            ("recency", "30 days", "recency must be 'off' or a half-life"),
            ("recency", "0d", "recency must be 'off' or a half-life"),
            ("recency", 30, "Input should be a valid string"),
            ("rerank", "yes", "Input should be a valid boolean"),
            ("rerank_candidates", 0, "greater than or equal to 1"),
            ("rerank_candidates", 101, "less than or equal to 100"),
            ("rerank_candidates", 2.5, "Input should be a valid integer"),
        ]
        for name, value, said in bad:
            error = await call({name: value})
            assert f"\n{name}\n  " in error and said in error, (name, value, error)
            assert "does not answer" not in error, (name, value)
        every = {
            "fusion": "dbsf",
            "dense_weight": 1.5,
            "sparse_weight": 0.5,
            "diversity": 0.3,
            "recency": "30d",
            "rerank": True,
            "rerank_candidates": 20.0,  # as on the API: 20.0 is 20
        }
        assert "does not answer" in await call(every)

    asyncio.run(go())
