"""The real service for the MCP tests: the API over a real index and encoders holding two
tenants' documents (one of acme's readable only by its `sales` group), answers from a
local OpenAI-protocol server, and `freshrag mcp` in front of it over streamable HTTP
(in-process uvicorn) or stdio (the CLI as a child process), reached with the SDK's own
client."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client

from api.app import create_app
from freshrag.mcp.transports import http_app
from freshrag.runtime import ServerThread
from ingest.events import DocumentEvent
from tests.conftest import free_port, make_indexer, make_services, make_settings, upsert
from tests.llm_servers import ScriptedLLM

ANSWER = "Send it SIGTERM [1]."
# (tenant, acl) -> {doc_id: markdown}.
CORPUS: dict[tuple[str, str], dict[str, str]] = {
    ("acme", "eng"): {
        "runbook": "# Worker runbook\n\n## Stopping\n\nTo stop the ingest worker cleanly, "
        "send it SIGTERM. It finishes the batch in hand and commits offsets.\n\n## Restarting"
        "\n\nA restarted worker resumes from the committed offsets of its consumer group.",
        "guides/retention": "# Retention\n\n## Old versions\n\nThe zircon ledger keeps every "
        "superseded version for thirty days before compaction removes it.",
        "guides/keys": "# API keys\n\n## Rotation\n\nRotate a key by adding the new one to "
        "the keys file, deploying, then removing the old one.",
    },
    ("acme", "sales"): {
        "sales/pricing": "# Pricing\n\n## Discounts\n\nThe obsidian discount gives strategic "
        "accounts forty percent off the list price when a worker contract is renewed.",
    },
    ("globex", "eng"): {
        "globex/runbook": "# Globex runbook\n\n## Stopping\n\nGlobex workers stop on SIGINT "
        "after draining their queue; the tourmaline vault keeps their offsets.",
    },
}
# A phrase of each document that no other document and no test's question holds: seen
# in a search hit, a citation or a provider's prompt, it shows the document reached it.
MARKERS = {
    "runbook": "finishes the batch in hand",
    "guides/retention": "thirty days before compaction",
    "guides/keys": "then removing the old one",
    "sales/pricing": "forty percent off",
    "globex/runbook": "draining their queue",
}
# What each test key (tests/conftest.py's make_settings) may read.
READABLE = {
    "key-a": {"runbook", "guides/retention", "guides/keys"},
    "key-a-sales": {"sales/pricing"},
    "key-b": {"globex/runbook"},
}


@dataclass
class Service:
    api: str  # the FreshRAG API
    mcp: str  # `freshrag mcp --transport http` in front of it
    llm: ScriptedLLM


@contextmanager
def serving(tmp_path: Path, index, dense, sparse, events: list[DocumentEvent]) -> Iterator[Service]:  # noqa: ANN001
    """The API over `events` indexed, and `freshrag mcp` over HTTP in front of it."""
    llm = ScriptedLLM("openai", default=("ok", ANSWER)).start()
    primary = {"kind": "openai", "base_url": llm.base_url, "model": "gpt-x", "retries": 0}
    settings = make_settings(tmp_path, llm_chain=[primary], answer_require_names=False)
    make_indexer(index, dense, sparse).apply(events)
    api = ServerThread(
        create_app(make_services(settings, index, dense, sparse)), "127.0.0.1", free_port()
    ).start()
    mcp = ServerThread(http_app(api.url), "127.0.0.1", free_port()).start()
    try:
        yield Service(api.url, f"{mcp.url}/mcp", llm)
    finally:
        mcp.stop()
        api.stop()
        llm.stop()


@pytest.fixture
def service(tmp_path: Path, edge_index, dense, sparse):  # noqa: ANN001, ANN201
    events = [
        upsert(doc_id, text, 1, tenant=tenant, acl=[group])
        for (tenant, group), docs in CORPUS.items()
        for doc_id, text in docs.items()
    ]
    with serving(tmp_path, edge_index, dense, sparse, events) as running:
        yield running


@asynccontextmanager
async def over_http(mcp_url: str, key: str | None) -> AsyncIterator[ClientSession]:
    """An initialized session over streamable HTTP, every request with `key` (if any)."""
    headers = {"Authorization": f"Bearer {key}"} if key is not None else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(mcp_url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session


@asynccontextmanager
async def over_stdio(
    api_url: str, key: str, cwd: Path, *extra: str
) -> AsyncIterator[ClientSession]:
    """An initialized session with `freshrag mcp` started as a child process, as an MCP
    client (Claude Desktop, an agent) starts it, its key in FRESHRAG_API_KEY."""
    params = StdioServerParameters(
        command=str(Path(sys.executable).parent / "freshrag"),
        args=["mcp", "--url", api_url, *extra],
        env={**get_default_environment(), "FRESHRAG_API_KEY": key},
        cwd=cwd,
    )
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        yield session
