"""`wait_for_version` over the server's long-poll: a 202 (the server's wait ended before the
version was indexed) means ask again, not an error, until the client's own timeout; then
`TimedOut` carries what the server said is indexed instead."""

from __future__ import annotations

import asyncio

import pytest

from freshrag_client import AsyncClient, Client, TimedOut
from tests.client.scripted import ScriptedHTTP, reply

pytestmark = pytest.mark.unit

PENDING = {
    "doc_id": "a/b",
    "min_version": 2,
    "version": 1,
    "deleted": False,
    "detail": "version 2 of 'a/b' not indexed in time (indexed: version 1)",
}
INDEXED = {"doc_id": "a/b", "version": 2, "chunk_count": 3, "indexed_at": "2026-12-07T06:00:00Z"}


def test_a_202_is_asked_again_until_the_version_is_indexed():
    with ScriptedHTTP(reply(202, PENDING), reply(200, INDEXED)) as server, Client(server.url) as c:
        doc = c.wait_for_version("a/b", 2, timeout=10)
    assert (doc.version, doc.chunk_count) == (2, 3)
    first, second = server.requests
    assert first["path"].startswith("/documents/a/b?min_version=2&wait=")
    assert second["path"].startswith("/documents/a/b?min_version=2&wait=")
    assert second["at"] - first["at"] >= 0.4, "a 202 after no wait is re-asked after a pause"


def test_the_client_timeout_raises_timed_out_with_what_is_indexed():
    with (
        ScriptedHTTP(reply(202, PENDING)) as server,
        Client(server.url) as c,
        pytest.raises(TimedOut) as late,
    ):
        c.wait_for_version("a/b", 2, timeout=0.3)
    assert isinstance(late.value, TimeoutError) and late.value.status == 202
    assert late.value.detail == PENDING["detail"] and late.value.body == PENDING
    assert 1 <= len(server.requests) <= 3


def test_the_async_client_asks_again_after_a_202_too():
    async def main() -> int:
        async with AsyncClient(server.url) as c:
            return (await c.wait_for_version("a/b", 2, timeout=10)).version

    with ScriptedHTTP(reply(202, PENDING), reply(202, PENDING), reply(200, INDEXED)) as server:
        assert asyncio.run(main()) == 2
        assert len(server.requests) == 3


def test_a_504_from_a_server_before_the_202_is_still_a_wait_that_ran_out():
    old = {"detail": "version 2 of 'a/b' not indexed in time (indexed: version 1)"}
    with ScriptedHTTP(reply(504, old), reply(200, INDEXED)) as server, Client(server.url) as c:
        assert c.wait_for_version("a/b", 2, timeout=10).version == 2
    assert len(server.requests) == 2
