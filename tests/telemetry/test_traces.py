"""Traces over the real protocol: the service as the suite builds it (uvicorn, a real Edge
index, the model, the Tansu broker, a worker, local LLM protocol servers) exports to a
local OTLP/HTTP receiver that decodes every `ExportTraceServiceRequest` with
opentelemetry-proto. Checked: a /retrieve continues the caller's `traceparent` and shows
auth, encode, search and rank; /answer shows each provider attempt and the cache's hit
or miss; a published event is traced from consume to write under the publisher's trace,
with its doc id and version; no span carries a query, a prompt, an answer or a
document's text; and without an endpoint nothing is started."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from freshrag import spans, telemetry
from freshrag.runtime import ServerThread
from ingest.broker import ensure_topics
from tests.conftest import (
    free_port,
    make_indexer,
    make_services,
    make_settings,
    publish_events,
    running_worker,
    upsert,
)
from tests.llm_servers import ScriptedLLM
from tests.telemetry.otlp import OtlpReceiver, Span, children, one, strings_in

ROOT = Path(__file__).resolve().parents[2]
KEY = {"X-API-Key": "key-a"}
DOCS = {
    "runbook": "# Worker runbook\n\n## Stopping\n\nTo stop the ingest worker cleanly, send it "
    "SIGTERM. It finishes the batch in hand and commits offsets.",
    "guides/keys": "# API keys\n\n## Rotation\n\nRotate a key by adding the new one to the "
    "keys file, deploying, then removing the old one.",
}
ANSWER = "Send the worker SIGTERM [1]."


def traceparent() -> tuple[str, str, str]:
    """(header, trace id, span id) of a caller's sampled span."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver().start()
    yield r
    r.stop()


@pytest.fixture
def tracing(receiver: OtlpReceiver) -> Iterator[telemetry.Tracing]:
    """Tracing on, configured as a process is: from OTEL_EXPORTER_OTLP_ENDPOINT."""
    assert telemetry.active() is None and not spans.enabled()
    base = receiver.url.removesuffix("/v1/traces")
    t = telemetry.configure(env={"OTEL_EXPORTER_OTLP_ENDPOINT": base}, register_global=False)
    assert t is not None and t.endpoint == receiver.url
    yield t
    t.shutdown()
    assert telemetry.active() is None and not spans.enabled()


def api_over_docs(settings, edge_index, dense, sparse) -> ServerThread:  # noqa: ANN001
    make_indexer(edge_index, dense, sparse).apply(
        [upsert(d, text, 1, tenant="acme", acl=["eng"]) for d, text in DOCS.items()]
    )
    services = make_services(settings, edge_index, dense, sparse)
    return ServerThread(create_app(services), "127.0.0.1", free_port()).start()


def received(
    receiver: OtlpReceiver, tracing: telemetry.Tracing, trace_id: str, names: set[str]
) -> list[Span]:
    """The spans of `trace_id`, once those named `names` (at least) arrived."""

    def found(r: OtlpReceiver) -> list[Span] | None:
        got = r.trace(trace_id)
        return got if names <= {s.name for s in got} else None

    return receiver.wait(found, tracing.flush)


def assert_no_content(got: list[Span], *texts: str) -> None:
    """No attribute, event or name holds any of `texts`, nor a sentence of the documents."""
    sentences = [s.strip() for text in DOCS.values() for s in text.split(".") if len(s) > 20]
    for value in strings_in(got):
        for text in [*texts, *sentences]:
            assert text not in value, f"span content: {value!r} holds {text!r}"


def test_retrieve_continues_the_callers_trace_through_auth_encode_search_rank(
    tracing, receiver, tmp_path, edge_index, dense, sparse
):
    header, trace_id, caller = traceparent()
    # A query of its own: the encoder's cache (the `dense` fixture is shared) must miss.
    query = f"how do I stop the ingest worker {uuid.uuid4().hex[:6]}"
    api = api_over_docs(make_settings(tmp_path), edge_index, dense, sparse)
    try:
        r = httpx.post(
            f"{api.url}/retrieve",
            json={"query": query, "top_k": 3},
            headers={**KEY, "traceparent": header},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["hits"], r.text
        assert httpx.get(f"{api.url}/healthz", headers={"traceparent": header}).status_code == 200
    finally:
        api.stop()
    got = received(
        receiver, tracing, trace_id, {"POST /retrieve", "auth", "retrieve", "encode", "search"}
    )

    server = one(got, "POST /retrieve")
    assert (server.kind, server.parent_id) == ("server", caller)  # the caller's span's child
    assert server.attributes["http.response.status_code"] == 200
    assert server.resource["service.name"] == "freshrag"
    auth, retrieve = one(got, "auth"), one(got, "retrieve")
    assert auth.parent_id == retrieve.parent_id == server.span_id
    assert auth.attributes["freshrag.tenant"] == "acme"
    assert len(auth.attributes["freshrag.key_id"]) == 12  # a hash prefix, never the key
    assert retrieve.attributes["freshrag.mode"] == "hybrid"
    assert retrieve.attributes["freshrag.hits"] == len(r.json()["hits"])

    # Encoding ran in an encoder thread, batched; its span is the request's, in the lane.
    (encode,) = [s for s in children(got, retrieve) if s.name == "encode"]
    assert encode.attributes["freshrag.encode.kind"] == "query"
    assert encode.attributes["freshrag.encode.cached"] == 0
    assert encode.attributes["freshrag.encode.batch_size"] >= 1
    assert encode.attributes["freshrag.encode.model_ms"] > 0
    assert 0 <= encode.attributes["freshrag.encode.wait_ms"] <= encode.ms
    search = one(got, "search")
    assert search.parent_id == retrieve.span_id
    assert search.attributes["freshrag.search.fusion"] == "rrf"
    assert search.attributes["freshrag.search.hits"] >= 1
    rank = one(got, "rank")
    assert rank.parent_id == retrieve.span_id and rank.start_ns >= search.end_ns
    assert rank.attributes["freshrag.group"] == "section"
    assert rank.attributes["freshrag.rank.candidates"] == search.attributes["freshrag.search.hits"]
    assert not receiver.named("GET /healthz")  # probes are not traced
    for s in got:
        assert server.start_ns <= s.start_ns <= s.end_ns <= server.end_ns, s.name
    assert_no_content(got, query)


def test_answer_traces_each_provider_attempt_and_the_cache(
    tracing, receiver, tmp_path, edge_index, dense, sparse
):
    llm = ScriptedLLM("openai", default=("ok", ANSWER)).start()
    # One retry: the first call fails with a 500, the second answers.
    primary = {"kind": "openai", "base_url": llm.base_url, "model": "gpt-x", "retries": 1}
    settings = make_settings(tmp_path, llm_chain=[primary], answer_require_names=False)
    api = api_over_docs(settings, edge_index, dense, sparse)
    question = f"How do I stop the ingest worker cleanly {uuid.uuid4().hex[:6]}?"
    asked = []

    def ask(**body) -> httpx.Response:  # noqa: ANN003
        header, trace_id, caller = traceparent()
        asked.append((trace_id, caller))
        r = httpx.post(
            f"{api.url}/answer",
            json={"query": question, **body},
            headers={**KEY, "traceparent": header},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        return r

    try:
        llm.script = [("status", 500)]
        first = ask().json()
        assert (first["answer"], first["cached"]) == (ANSWER, False)
        second = ask().json()
        assert second["cached"] is True
        streamed = ask(stream=True, cache=False).text
        assert "event: done" in streamed
    finally:
        api.stop()
        llm.stop()
    (t1, caller1), (t2, _), (t3, _) = asked

    got = received(receiver, tracing, t1, {"POST /answer", "llm.attempt", "answer.cache.store"})
    server = one(got, "POST /answer")
    assert server.parent_id == caller1
    lookup = one(got, "answer.cache.lookup")
    assert lookup.attributes == {"freshrag.cache.hit": False}
    attempts = sorted((s for s in got if s.name == "llm.attempt"), key=lambda s: s.start_ns)
    assert [
        (
            a.attributes["freshrag.provider"],
            a.attributes["gen_ai.request.model"],
            a.attributes["freshrag.provider.attempt"],
            a.attributes["freshrag.provider.outcome"],
            a.error,
        )
        for a in attempts
    ] == [("openai", "gpt-x", 1, "error", True), ("openai", "gpt-x", 2, "ok", False)]
    assert attempts[0].end_ns <= attempts[1].start_ns  # the backoff between them
    assert attempts[1].attributes["gen_ai.usage.output_tokens"] > 0
    assert all(a.parent_id == server.span_id for a in attempts)
    assert {"auth", "encode", "retrieve", "search"} <= {s.name for s in got}
    assert one(got, "answer.cache.store").start_ns >= attempts[1].end_ns

    hit = received(receiver, tracing, t2, {"POST /answer", "answer.cache.lookup"})
    assert one(hit, "answer.cache.lookup").attributes == {"freshrag.cache.hit": True}
    assert not [s for s in hit if s.name in ("llm.attempt", "retrieve")]  # answered from cache

    stream = received(receiver, tracing, t3, {"POST /answer", "llm.attempt"})
    attempt = one(stream, "llm.attempt")
    assert attempt.parent_id == one(stream, "POST /answer").span_id
    assert attempt.attributes["freshrag.provider.outcome"] == "ok"
    assert attempt.attributes["freshrag.provider.first_token_ms"] > 0
    assert "answer.cache.lookup" not in {s.name for s in stream}  # "cache": false

    assert llm.requests, "the provider was called"
    sent = llm.requests[-1]["body"]["messages"]
    prompt_lines = [line for m in sent for line in m["content"].splitlines() if len(line) > 30]
    assert_no_content(got + hit + stream, question, ANSWER, *prompt_lines)


def test_a_published_event_is_traced_from_consume_to_write(
    tracing, receiver, tmp_path, broker, edge_index, dense, sparse
):
    keys = {"pub": {"tenant": "acme", "groups": ["eng"], "publish": True}}
    settings = make_settings(tmp_path, broker, api_keys=keys)
    ensure_topics(settings)
    services = make_services(settings, edge_index, dense, sparse)
    api = ServerThread(create_app(services), "127.0.0.1", free_port()).start()
    secret = "The quartz escrow ledger reconciles every Tuesday at noon."
    title = "Escrow operations manual"
    event = {
        "op": "upsert",
        "doc_id": "ops/escrow",
        "version": 3,
        "acl": ["eng"],
        "title": title,
        "mime": "text/markdown",
        "content": f"# {title}\n\n## Schedule\n\n{secret}",
    }
    published, trace_id, caller = traceparent()
    deleted, delete_trace, _ = traceparent()
    pub = {"X-API-Key": "pub"}
    try:
        with (
            running_worker(settings, make_indexer(edge_index, dense, sparse)),
            httpx.Client(base_url=api.url, timeout=60) as http,
        ):
            r = http.post("/documents", json=event, headers={**pub, "traceparent": published})
            assert r.status_code == 202, r.text
            r = http.get("/documents/ops/escrow?min_version=3&wait=30", headers=pub)
            assert r.status_code == 200 and r.json()["version"] == 3, r.text
            # Published without a trace (a Kafka client of its own): the worker starts one.
            plain = upsert(
                "ops/plain", "# Plain\n\nNothing traced upstream.", 1, tenant="acme", acl=["eng"]
            )
            publish_events(settings, [plain])
            r = http.get("/documents/ops/plain?min_version=1&wait=30", headers=pub)
            assert r.status_code == 200, r.text
            r = http.delete(
                "/documents/ops/escrow?version=4", headers={**pub, "traceparent": deleted}
            )
            assert r.status_code == 202, r.text
            r = http.get("/documents/ops/escrow?min_version=4&wait=30", headers=pub)
            assert r.status_code in (200, 404), r.text
    finally:
        api.stop()

    stages = {"ingest.parse", "ingest.diff", "ingest.embed", "ingest.write"}
    got = received(
        receiver, tracing, trace_id, {"POST /documents", "publish", "ingest.event"} | stages
    )
    server = one(got, "POST /documents")
    assert server.parent_id == caller
    publish = one(got, "publish")
    assert (publish.kind, publish.parent_id) == ("producer", server.span_id)
    assert publish.attributes["messaging.destination.name"] == settings.topic
    consumed = one(got, "ingest.event")
    assert (consumed.kind, consumed.parent_id) == ("consumer", publish.span_id)
    attrs = consumed.attributes
    assert (attrs["freshrag.doc_id"], attrs["freshrag.version"], attrs["freshrag.tenant"]) == (
        "ops/escrow",
        3,
        "acme",
    )
    assert (attrs["freshrag.op"], attrs["freshrag.ingest.status"]) == ("upsert", "indexed")
    assert attrs["messaging.destination.name"] == settings.topic
    assert attrs["freshrag.ingest.chunks.embedded"] >= 1
    order = [
        one(got, name) for name in ("ingest.parse", "ingest.diff", "ingest.embed", "ingest.write")
    ]
    for stage in order:
        assert stage.parent_id == consumed.span_id, stage.name
        assert consumed.start_ns <= stage.start_ns <= stage.end_ns <= consumed.end_ns
    assert [s.start_ns for s in order] == sorted(s.start_ns for s in order)
    assert order[0].attributes["freshrag.ingest.chunks"] >= 1
    assert order[2].attributes["freshrag.ingest.chunks.embedded"] >= 1

    gone = received(receiver, tracing, delete_trace, {"ingest.event", "ingest.write"})
    removed = one(gone, "ingest.event")
    assert (removed.attributes["freshrag.op"], removed.attributes["freshrag.version"]) == (
        "delete",
        4,
    )
    assert one(gone, "ingest.write").parent_id == removed.span_id

    # No traceparent on the record: the event's span starts a trace of its own.
    roots = receiver.wait(
        lambda r: [
            s for s in r.named("ingest.event") if s.attributes["freshrag.doc_id"] == "ops/plain"
        ],
        tracing.flush,
    )
    assert roots[0].parent_id == ""
    assert_no_content(got + gone + roots, secret, title, "Nothing traced upstream")


@pytest.mark.unit
def test_the_endpoint_comes_from_opentelemetrys_own_variables():
    assert telemetry.endpoint_from({}) is None
    base = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"}
    assert telemetry.endpoint_from(base) == "http://collector:4318/v1/traces"
    own = {**base, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:9999/custom"}
    assert telemetry.endpoint_from(own) == "http://traces:9999/custom"  # used as given
    assert telemetry.endpoint_from({**own, "OTEL_SDK_DISABLED": "true"}) is None
    assert telemetry.endpoint_from({**own, "OTEL_TRACES_EXPORTER": "none"}) is None


@pytest.mark.unit
def test_without_an_endpoint_no_exporter_is_created():
    """In a fresh process, as `freshrag serve` starts: no SDK loaded, no exporter thread,
    FastAPI left as it is, one shared no-op for every span."""
    code = """
import sys, threading
from freshrag import spans, telemetry
from api.tracing import telemetry_config
assert telemetry.configure() is None and telemetry.active() is None
assert not spans.enabled() and telemetry_config() is None
assert spans.span("a") is spans.span("b")
with spans.span("a") as s:
    assert not s.is_recording()
loaded = [m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))]
assert not loaded, loaded
assert threading.active_count() == 1, threading.enumerate()
print("off")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and done.stdout.strip() == "off", done.stdout + done.stderr


@pytest.mark.unit
def test_sampling_follows_otel_traces_sampler(receiver, monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    t = telemetry.configure(receiver.url, register_global=False)
    assert t is not None
    try:
        with spans.span("sampled out") as s:
            assert not s.is_recording()
            assert spans.kafka_headers()  # still handed on, marked not sampled
    finally:
        t.shutdown()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "1.0")
    t = telemetry.configure(receiver.url, register_global=False)
    assert t is not None
    try:
        with spans.span("sampled in") as s:
            assert s.is_recording()
    finally:
        t.shutdown()
    receiver.wait(lambda r: r.named("sampled in"), lambda: None)
    assert not receiver.named("sampled out")


@pytest.mark.unit
def test_a_process_flushes_its_spans_when_it_exits(receiver):
    """As `freshrag serve` runs it: configured from the environment, the provider made
    global, and the batch in hand exported at exit (the processor's own delay is 5 s)."""
    code = """
from opentelemetry import trace
from freshrag import spans, telemetry
tracing = telemetry.configure()
assert tracing is not None and trace.get_tracer_provider() is tracing.provider
with spans.span("before exit"):
    pass
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.url.removesuffix("/v1/traces")
    env["OTEL_SERVICE_NAME"] = "freshrag-test"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    (span,) = receiver.named("before exit")
    assert span.resource["service.name"] == "freshrag-test"
    assert span.scope == "freshrag" and span.parent_id == ""


@pytest.mark.unit
def test_kafka_headers_carry_the_w3c_trace_context_and_nothing_large():
    """What a record carries stays inside the bytes kept free below the event size limit:
    the `traceparent`, a short `tracestate`, never a caller's baggage."""
    from opentelemetry import baggage, context

    header, _, _ = traceparent()
    for state, kept in ((b"vendor=abc", True), (b"vendor=" + b"x" * 200, False)):
        parent = spans.from_kafka_headers([("traceparent", header.encode()), ("tracestate", state)])
        assert parent is not None
        token = context.attach(baggage.set_baggage("user", "secret", parent))
        try:
            headers = dict(spans.kafka_headers() or [])
        finally:
            context.detach(token)
        assert headers.pop("traceparent") == header.encode()
        assert headers == ({"tracestate": state} if kept else {})
    assert spans.from_kafka_headers([("other", b"x")]) is None
    assert spans.from_kafka_headers(None) is None
