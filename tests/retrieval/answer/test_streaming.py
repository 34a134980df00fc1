"""The streamed provider chain against real local servers streaming each protocol's events."""

import asyncio
import time
from contextlib import aclosing

import anyio
import pytest

from retrieval.answer.gateway import ChainMember, DeadlineExceeded, Gateway, GatewayAnswer
from retrieval.answer.prompts import REFUSAL
from retrieval.answer.providers import AnthropicProvider, OpenAIProvider
from retrieval.answer.streaming import Delta, Reset, stream_answer
from tests.conftest import wait_for
from tests.llm_servers import ScriptedLLM, words
from tests.retrieval.answer.test_gateway import request

pytestmark = pytest.mark.unit


def openai(server, timeout=2.0, name=None):
    return OpenAIProvider(server.base_url, "local-llama", "sk-test", timeout, name=name)


def anthropic(server, timeout=2.0):
    return AnthropicProvider(server.base_url, "claude-test", "ak-test", timeout)


def gateway(*providers, retries=1):
    return Gateway([ChainMember(p, retries=retries) for p in providers], backoff=0.01)


def collect(gw, deadline=None, into=None):
    """Every event of one streamed answer (into `into` as they come, for a test that
    expects the stream to raise)."""
    events = [] if into is None else into

    async def main():
        async with aclosing(stream_answer(gw, request(), deadline)) as stream:
            async for event in stream:
                events.append(event)
        return events

    return asyncio.run(main())


def after_last_reset(events):
    resets = [i for i, e in enumerate(events) if isinstance(e, Reset)]
    start = resets[-1] + 1 if resets else 0
    return "".join(e.text for e in events[start:] if isinstance(e, Delta))


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_streams_speak_the_protocol_and_report_usage(protocol, openai_server, anthropic_server):
    server = openai_server if protocol == "openai" else anthropic_server
    provider = openai(server) if protocol == "openai" else anthropic(server)
    answer = "Send SIGTERM; the worker drains its batch [2]."
    server.script = [("ok", answer)]
    events = collect(gateway(provider))
    *deltas, final = events
    assert len(deltas) == len(words(answer)), "one delta per streamed piece"
    assert "".join(d.text for d in deltas) == answer
    assert isinstance(final, GatewayAnswer) and final.text == answer and final.citations == [2]
    assert (final.provider, final.model) == (protocol, provider.model)
    body = server.requests[0]["body"]
    assert body["stream"] is True
    if protocol == "openai":
        assert body["stream_options"] == {"include_usage": True}
    (usage,) = final.usage
    assert (usage.provider, usage.model, usage.outcome) == (protocol, provider.model, "ok")
    assert usage.input_tokens == ScriptedLLM._input_tokens(body) > 0
    assert usage.output_tokens == len(words(answer))
    assert 0 < usage.first_token_ms <= usage.latency_ms


def test_a_citation_outside_the_sources_stops_the_provider_at_once(openai_server, anthropic_server):
    # After [7] the provider would go on for seconds; it is stopped as soon as [7] arrives.
    chunks = ["Send SIGTERM ", "[2]. ", "Or restart ", "[7]", " and then ", "more."]
    openai_server.script = [("stream", chunks, [0, 0, 0, 0, 3.0, 3.0])]
    anthropic_server.script = [("ok", "Drain it with SIGTERM [2].")]
    started = time.monotonic()
    events = collect(gateway(openai(openai_server), anthropic(anthropic_server)))
    assert time.monotonic() - started < 2.0
    reset = next(e for e in events if isinstance(e, Reset))
    before = "".join(e.text for e in events[: events.index(reset)] if isinstance(e, Delta))
    assert before == "Send SIGTERM [2]. Or restart" and "[7]" not in before  # never sent
    assert (reset.provider, reset.reason) == ("openai", "invalid_citations")
    assert "[7]" in reset.detail
    final = events[-1]
    assert final.provider == "anthropic" and after_last_reset(events) == final.text
    assert [(a["provider"], a["outcome"]) for a in final.attempts] == [
        ("openai", "invalid_citations"),
        ("anthropic", "served"),
    ]
    assert [u.outcome for u in final.usage] == ["stopped", "ok"]
    record = openai_server.requests[0]
    wait_for(lambda: "closed_at" in record, timeout=2.0, interval=0.02)
    assert "done_at" not in record, "the provider was cut off, not read to the end"


def test_providers_failing_mid_stream_are_reset_and_the_next_streams(
    openai_server, anthropic_server
):
    backup = ScriptedLLM("openai", default=("ok", "Use SIGTERM [2].")).start()
    try:
        openai_server.script = [("drop", ["Send ", "SIGTERM "])]  # the connection is cut
        anthropic_server.script = [("fail", ["Drain ", "it "])]  # an error event
        gw = gateway(
            openai(openai_server), anthropic(anthropic_server), openai(backup, name="backup")
        )
        events = collect(gw)
    finally:
        backup.stop()
    resets = [e for e in events if isinstance(e, Reset)]
    assert [(r.provider, r.reason) for r in resets] == [("openai", "error"), ("anthropic", "error")]
    assert "the stream reported an error" in resets[1].detail
    final = events[-1]
    assert final.provider == "backup" and after_last_reset(events) == "Use SIGTERM [2]."
    # Text had gone out: no retry, though each had one left; each failure counts.
    assert len(openai_server.requests) == 1 and len(anthropic_server.requests) == 1
    assert [m.breaker.consecutive for m in gw.chain] == [1, 1, 0]


def test_errors_before_the_first_token_are_retried_without_a_reset(openai_server):
    openai_server.script = [("status", 503), ("ok", "Use SIGTERM [2].")]
    events = collect(gateway(openai(openai_server)))
    assert not any(isinstance(e, Reset) for e in events)
    assert events[-1].provider == "openai" and len(openai_server.requests) == 2
    assert [u.outcome for u in events[-1].usage] == ["error", "ok"]


def test_an_answer_citing_nothing_is_reset_at_its_end(openai_server, anthropic_server):
    openai_server.script = [("ok", "Just restart it, no sources needed.")]
    anthropic_server.script = [("ok", "Drain it with SIGTERM [2].")]
    events = collect(gateway(openai(openai_server), anthropic(anthropic_server)))
    (reset,) = [e for e in events if isinstance(e, Reset)]
    assert (reset.provider, reset.reason) == ("openai", "invalid_citations")
    assert "cites no source" in reset.detail
    assert events[-1].provider == "anthropic"


def test_a_streamed_refusal_is_served_as_a_refusal(openai_server):
    openai_server.script = [("ok", REFUSAL)]
    events = collect(gateway(openai(openai_server)))
    assert not any(isinstance(e, Reset) for e in events)
    final = events[-1]
    assert final.refused and final.provider == "openai" and final.text == REFUSAL
    assert after_last_reset(events) == REFUSAL


def test_nobody_grounded_ends_in_the_refusal(openai_server):
    openai_server.default = ("status", 500)
    events = collect(gateway(openai(openai_server)))
    assert events == [events[-1]] and events[-1].refused and events[-1].provider == "none"


def test_the_deadline_cuts_a_stream_short(openai_server, anthropic_server):
    openai_server.script = [("stream", ["Send ", "SIGTERM ", "[2]."], [0, 0, 10.0])]
    events = []
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded) as caught:
        collect(
            gateway(openai(openai_server, timeout=5.0), anthropic(anthropic_server)),
            deadline=started + 1.0,
            into=events,
        )
    assert 1.0 <= time.monotonic() - started < 1.6
    assert [type(e).__name__ for e in events] == ["Delta", "Delta", "Reset"]
    assert events[-1].reason == "deadline"
    assert [(a["provider"], a["outcome"]) for a in caught.value.attempts] == [
        ("openai", "deadline"),
        ("anthropic", "deadline"),
    ]
    assert anthropic_server.requests == []


async def _first_delta_then(openai_server, leave):
    """Streams a long answer, takes its first delta, then leaves as `leave` says; returns when
    it left and the usage records."""
    chunks = ["To stop it, send SIGTERM [2]. "] + ["And wait. "] * 50
    openai_server.script = [("stream", chunks, 0.1)]
    seen = []
    gw = gateway(openai(openai_server))
    gw.on_usage = seen.append
    got_one = anyio.Event()
    left_at = []

    async def consume():
        async with aclosing(stream_answer(gw, request())) as stream:
            async for event in stream:
                assert isinstance(event, Delta)
                got_one.set()
                if leave == "close":
                    left_at.append(time.monotonic())
                    return  # closes the stream (aclosing), as a generator's consumer does
        raise AssertionError("the answer ended before the client left")

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await got_one.wait()
        if leave == "cancel":  # how Starlette stops a response whose client disconnected
            left_at.append(time.monotonic())
            tg.cancel_scope.cancel()
    return left_at[0], seen


@pytest.mark.parametrize("leave", ["close", "cancel"])
def test_leaving_the_stream_closes_the_provider_call(openai_server, leave):
    left_at, seen = asyncio.run(_first_delta_then(openai_server, leave))
    record = openai_server.requests[0]
    wait_for(lambda: "closed_at" in record, timeout=2.0, interval=0.02)
    assert record["closed_at"] - left_at < 1.0
    assert "done_at" not in record
    assert [u.outcome for u in seen] == ["cancelled"]
