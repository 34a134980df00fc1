"""The client against local HTTP servers: retries on a busy 503, errors carrying the
server's message, the SSE wire format, and an import that loads no server machinery."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import get_args

import pytest

from api.models import request_models
from freshrag_client import (
    AnswerDelta,
    AnswerReset,
    AnswerResponse,
    AnswerStreamError,
    AsyncClient,
    Client,
    NotFound,
    RateLimited,
    TimedOut,
    Unauthorized,
    Unavailable,
    ValidationFailed,
)
from freshrag_client.errors import retry_after
from freshrag_client.models import Group, Mode
from freshrag_client.streams import SSEDecoder
from tests.client.scripted import ScriptedHTTP, events, reply

pytestmark = pytest.mark.unit

HIT = {
    "text": "Send it SIGTERM.",
    "score": 0.5,
    "doc_id": "runbook",
    "version": 3,
    "chunk_index": 0,
    "section": "Stopping",
    "path": ["Worker runbook"],
    "indexed_at": "2026-12-07T06:00:00.000000Z",
}
FOUND = {"hits": [HIT], "mode": "hybrid", "took_ms": 1.5}
BUSY = reply(503, {"detail": "the retrieve lane is full; retry shortly"}, retry_after="1")
ANSWER = {
    "answer": "Send it SIGTERM [1].",
    "citations": [{"n": 1, "doc_id": "runbook", "version": 3, "text": "Send it SIGTERM."}],
    "provider": "openai",
    "model": "gpt-x",
    "prompt": "grounded-answer@1",
    "cached": False,
    "refused": False,
}
HEAVY = ("torch", "fastapi", "starlette", "sentence_transformers", "qdrant_client", "qdrant_edge")


def test_importing_the_client_and_its_retrievers_loads_no_server_machinery():
    code = (
        "import json, sys, freshrag_client, freshrag_client.llamaindex, "
        "freshrag_client.langchain; "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_the_clients_request_values_are_the_servers():
    retrieve, _ = request_models(100, 10)
    assert set(get_args(retrieve.model_fields["mode"].annotation)) == set(get_args(Mode))
    assert set(get_args(retrieve.model_fields["group"].annotation)) == set(get_args(Group))


def test_a_busy_503_is_retried_after_its_retry_after_then_succeeds():
    with ScriptedHTTP(BUSY, reply(200, FOUND)) as server, Client(server.url, "k") as client:
        found = client.retrieve("stop the worker", top_k=1, filters={"doc_id": "runbook"})
    assert [h.doc_id for h in found.hits] == ["runbook"] and found.hits[0].version == 3
    first, second = server.requests
    assert second["at"] - first["at"] >= 0.95  # Retry-After: 1
    assert (
        first["body"]
        == second["body"]
        == {
            "query": "stop the worker",
            "top_k": 1,
            "filters": {"doc_id": "runbook"},
        }
    )
    assert first["headers"]["authorization"] == "Bearer k"


def test_the_async_client_retries_too_streams_included():
    stream = events(("delta", {"text": "Send it"}), ("done", ANSWER))

    async def go():
        async with AsyncClient(server.url, "k") as client:
            found = await client.retrieve("stop the worker")
            async with await client.answer("stop the worker", stream=True) as answer:
                return found, [e async for e in answer]

    with ScriptedHTTP(BUSY, reply(200, FOUND), BUSY, stream) as server:
        found, got = asyncio.run(go())
    assert found.hits[0].doc_id == "runbook"
    assert got == [AnswerDelta(text="Send it"), AnswerResponse(**ANSWER)]
    assert [r["path"] for r in server.requests] == ["/retrieve"] * 2 + ["/answer"] * 2


def test_retries_are_bounded_and_the_last_503_carries_the_servers_message():
    busy = reply(503, {"detail": "the answer lane is full"}, retry_after="100")
    with ScriptedHTTP(busy) as server, Client(server.url, retries=2, max_retry_wait=0.05) as c:
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            c.answer("why")
    assert time.monotonic() - started < 5  # the cap, not the server's 100 s
    assert len(server.requests) == 3
    assert caught.value.status == 503 and caught.value.detail == "the answer lane is full"
    assert caught.value.retry_after == 100
    assert "the answer lane is full" in str(caught.value)


def test_a_503_without_retry_after_is_not_retried():
    off = reply(503, {"detail": "answers are not configured on this server"})
    with (
        ScriptedHTTP(off) as server,
        Client(server.url) as client,
        pytest.raises(Unavailable, match="answers are not configured on this server"),
    ):
        client.answer("why", stream=True)
    assert len(server.requests) == 1


def test_error_replies_become_exceptions_with_the_servers_words():
    invalid = {
        "detail": [
            {
                "loc": ["body", "top_k"],
                "msg": "top_k must be between 1 and 50",
                "type": "top_k_range",
            }
        ]
    }
    over = {
        "detail": "API key 'bob' is over its limit tokens_per_day=5",
        "limit": "tokens_per_day",
        "scope": "API key 'bob'",
    }
    script = [
        reply(422, invalid),
        reply(429, over, retry_after="3600"),
        reply(401, {"detail": "unknown API key"}),
        reply(404, {"detail": "document 'a/b c' is not indexed"}),
        reply(504, {"detail": "version 2 of 'a' not indexed in time (indexed: version 1)"}),
    ]
    with ScriptedHTTP(*script) as server, Client(server.url) as client:
        with pytest.raises(ValidationFailed) as bad:
            client.retrieve("x", top_k=99)
        with pytest.raises(RateLimited) as limited:
            client.answer("x")
        with pytest.raises(Unauthorized, match="unknown API key"):
            client.providers()
        with pytest.raises(NotFound, match="is not indexed"):
            client.document("a/b c")
        with pytest.raises(TimedOut) as late:
            client.wait_for_version("a", 2, timeout=0)
    assert bad.value.errors == invalid["detail"]
    assert bad.value.detail == "body.top_k: top_k must be between 1 and 50"
    assert (limited.value.limit, limited.value.scope) == ("tokens_per_day", "API key 'bob'")
    assert limited.value.retry_after == 3600 and len(server.requests) == 5  # 429: no retry
    assert isinstance(late.value, TimeoutError) and "indexed: version 1" in late.value.detail
    assert server.requests[3]["path"] == "/documents/a/b%20c"
    assert server.requests[4]["path"] == "/documents/a?min_version=2&wait=0.0"


def test_a_stream_yields_each_event_typed_and_skips_unknown_ones():
    stream = events(
        ("delta", {"text": "Restart"}),
        ("reset", {"provider": "local", "reason": "invalid_citations", "detail": "[7]"}),
        ("progress", {"later": "servers may add events"}),
        ("delta", {"text": "Send it SIGTERM [1]."}),
        ("error", {"status": 504, "detail": "the answer deadline ran out"}),
    )
    with (
        ScriptedHTTP(stream) as server,
        Client(server.url) as client,
        client.answer("stop", stream=True, cache=False, provider="local") as answer,
    ):
        got = list(answer)
    assert got == [
        AnswerDelta(text="Restart"),
        AnswerReset(provider="local", reason="invalid_citations", detail="[7]"),
        AnswerDelta(text="Send it SIGTERM [1]."),
        AnswerStreamError(status=504, detail="the answer deadline ran out"),
    ]
    [sent] = server.requests
    assert sent["body"] == {"query": "stop", "stream": True, "cache": False, "provider": "local"}
    assert sent["headers"]["accept"] == "text/event-stream"


def test_the_sse_decoder_joins_data_lines_and_ignores_comments_and_ids():
    decoder = SSEDecoder()
    lines = [": ping", "", "event: delta", "id: 7", 'data: {"text":', 'data: "a"}', ""]
    out = [e for e in map(decoder.feed, lines) if e]
    assert out == [("delta", '{"text":\n"a"}')]


def test_retry_after_reads_seconds_and_http_dates():
    assert retry_after("3") == 3.0 and retry_after(None) is None and retry_after("soon") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    assert 25 < retry_after(later) <= 30
