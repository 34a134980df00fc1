"""The FreshRAG API as the MCP adapter reaches it: one connection pool, a client per call
carrying that call's key, and the API's error replies as the MCP errors a caller reads.

Every search, answer and document read goes through the HTTP API with the caller's own
key, so tenant, groups, limits and usage are decided where they are for any HTTP caller;
this side holds no key of its own and decides nothing about who may read what.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from freshrag_client import AsyncClient, FreshRAGError, ValidationFailed


class ApiUnreachable(Exception):
    """The API did not answer (connection refused, reset, timed out)."""


class Api:
    """One connection pool to the API at `url`, shared by every caller's client.

    `AsyncClient` puts its key in its default headers, so each call gets its own client
    on the shared transport: connections are reused, keys are never mixed. The clients
    are not closed one by one (closing one would close the shared transport): `aclose`
    closes the pool once, at shutdown.
    """

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._transport = httpx.AsyncHTTPTransport()

    def client(self, key: str) -> AsyncClient:
        return AsyncClient(self.url, key, timeout=self.timeout, transport=self._transport)

    @asynccontextmanager
    async def call(self, key: str) -> AsyncIterator[AsyncClient]:
        """A client for one call; a transport failure becomes `ApiUnreachable`."""
        try:
            yield self.client(key)
        except httpx.TransportError as exc:
            raise ApiUnreachable(f"the FreshRAG API at {self.url} does not answer: {exc}") from exc

    async def aclose(self) -> None:
        await self._transport.aclose()


def message(exc: FreshRAGError) -> str:
    """What the API said, as the caller of a tool should read it.

    A 422 names the arguments as the tool has them (`top_k: ...`, not `body.top_k: ...`);
    anything else is the API's own message with its status.
    """
    if isinstance(exc, ValidationFailed) and exc.errors:
        parts = []
        for error in exc.errors:
            loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "path", "query")]
            parts.append(f"{'.'.join(loc)}: {error.get('msg', '')}" if loc else error.get("msg"))
        return "invalid arguments: " + "; ".join(str(p) for p in parts)
    return f"{exc.detail} (HTTP {exc.status})"
