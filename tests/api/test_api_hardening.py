"""The API under abuse: bad input is a 4xx naming the field, long-polls cost no thread,
lanes are bounded, lookups reveal nothing the caller cannot read, HTTP conventions hold."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient

from api.app import Services, create_app
from api.auth import KeyStore
from api.lanes import Lane, LaneFull
from api.waits import DocumentWatch
from freshrag.runtime import ServerThread
from retrieval.search import Retriever
from retrieval.store.types import DocumentState
from tests.conftest import (
    delete,
    free_port,
    make_indexer,
    make_services,
    make_settings,
    open_backend,
    upsert,
)

A = {"Authorization": "Bearer key-a"}
SALES = {"Authorization": "Bearer key-a-sales"}
JSON = {"Content-Type": "application/json"}
BIG = "1" + "0" * 29  # beyond signed 64-bit
LONG = "1" + "0" * 400  # overflows a float


def with_filters(filters: str) -> str:
    return '{"query": "x", "filters": ' + filters + "}"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, dense, sparse) -> Iterator[dict]:  # noqa: ANN001
    """A real uvicorn server over a real Edge index, shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("hardening")
    settings = make_settings(
        tmp, max_top_k=20, max_query_chars=200, wait_max_seconds=6, max_request_bytes=100_000
    )
    index = open_backend("edge", tmp, dense.dim)
    indexer = make_indexer(index, dense, sparse)
    indexer.apply(
        [
            upsert(
                "runbook",
                "# Runbook\n\nRestart the worker with SIGTERM.",
                1,
                tenant="acme",
                acl=["eng"],
            ),
            upsert(
                "pricing",
                "# Pricing\n\nBilling restarts quarterly.",
                1,
                tenant="acme",
                acl=["sales"],
            ),
            upsert("secret", "# Secret\n\nSales only.", 1, tenant="acme", acl=["sales"]),
        ]
    )
    indexer.apply([delete("secret", 2, tenant="acme", acl=["sales"])])
    services = make_services(settings, index, dense, sparse)
    # A long fallback: a waiter that wakes in time can only have been woken by notify().
    services.watch = DocumentWatch(fallback_s=30)
    server = ServerThread(create_app(services), "127.0.0.1", free_port()).start()
    try:
        yield {"url": server.url, "services": services, "index": index, "indexer": indexer}
    finally:
        server.stop()
        index.close()


@pytest.fixture
def http(live: dict) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live["url"], timeout=30) as client:
        yield client


def post_raw(http: httpx.Client, raw: str, path: str = "/retrieve") -> httpx.Response:
    return http.post(path, content=raw.encode("utf-8", "surrogatepass"), headers={**A, **JSON})


def assert_422_at(r: httpx.Response, loc: list) -> str:
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    assert all(set(item) == {"loc", "msg", "type"} for item in detail), detail
    assert loc in [item["loc"] for item in detail], detail
    return " ".join(item["msg"] for item in detail)


# --- bad input → 4xx, never 500 ---------------------------------------------------------------


@pytest.mark.model
@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        (r'{"query": "\ud800"}', ["body", "query"]),
        (r'{"query": "x", "filters": {"doc_id": "\udfff"}}', ["body", "filters", "doc_id"]),
        ('{"query": "x", "top_k": NaN}', ["body", "top_k"]),
        ('{"query": "x", "top_k": Infinity}', ["body", "top_k"]),
        ('{"query": "x", "top_k": -Infinity}', ["body", "top_k"]),
        ('{"query": "x", "top_k": true}', ["body", "top_k"]),
        ('{"query": "x", "top_k": "5"}', ["body", "top_k"]),
        ('{"query": "x", "top_k": 5.5}', ["body", "top_k"]),
        (with_filters('{"doc_id": ' + BIG + "}"), ["body", "filters", "doc_id"]),
        (with_filters('{"version": ' + BIG + "}"), ["body", "filters", "version"]),
        (
            with_filters('{"chunk_index": [1, ' + BIG + "]}"),
            ["body", "filters", "chunk_index"],
        ),
        (
            with_filters('{"version": {"lt": -' + BIG + "}}"),
            ["body", "filters", "version"],
        ),
        (
            with_filters('{"version": {"gte": ' + LONG + "}}"),
            ["body", "filters", "version"],
        ),
        (
            '{"query": "x", "filters": {"version": {"gte": 1e400}}}',
            ["body", "filters", "version", "gte"],
        ),
        (
            '{"query": "x", "filters": {"version": {"gte": NaN}}}',
            ["body", "filters", "version", "gte"],
        ),
    ],
)
def test_bad_input_is_a_422_that_names_the_field(http, raw, loc):
    for path in ("/retrieve", "/answer"):
        assert_422_at(post_raw(http, raw, path), loc)


@pytest.mark.model
def test_odd_input_that_is_not_a_field_is_still_a_4xx(http):
    msg = assert_422_at(post_raw(http, '{"query": "x", "top_k": 1' + "0" * 5000 + "}"), ["body"])
    assert "too long" in msg
    assert_422_at(post_raw(http, '{"query": "x"'), ["body", 13])
    assert_422_at(post_raw(http, "[" * 50_000), ["body"])
    r = http.get("/documents/a%0Ab", headers=A)
    assert "control characters" in assert_422_at(r, ["path", "doc_id"])
    assert_422_at(
        http.get("/documents/a", params={"min_version": 1, "wait": "nan"}, headers=A),
        ["query", "wait"],
    )
    assert_422_at(
        http.get("/documents/a", params={"min_version": BIG}, headers=A), ["query", "min_version"]
    )


@pytest.mark.model
def test_oversized_bodies_get_a_413_with_or_without_a_length(http):
    huge = '{"query": "x", "filters": {"doc_id": ["%s"]}}' % ("a" * 10_000_000)
    r = post_raw(http, huge)
    assert r.status_code == 413 and "larger than 100000 bytes" in r.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield b'{"query": "x", "filters": {"doc_id": ["'
        for _ in range(50):
            yield b"a" * 10_000
        yield b'"]}}'

    r = http.post("/retrieve", content=chunks(), headers={**A, **JSON})
    assert r.request.headers.get("transfer-encoding") == "chunked"
    assert r.status_code == 413 and "larger than" in r.json()["detail"]


@pytest.mark.model
def test_one_422_shape_for_pydantic_and_our_own_checks(http):
    for body, loc in [
        ({"query": "x", "mode": "fuzzy"}, ["body", "mode"]),
        ({"query": "x", "filters": {"colour": "red"}}, ["body", "filters", "colour"]),
        ({"query": "   "}, ["body", "query"]),
        ({"query": "x", "prompt": {"version": 0}}, ["body", "prompt", "version"]),
    ]:
        path = "/answer" if "prompt" in body else "/retrieve"
        assert_422_at(http.post(path, json=body, headers=A), loc)


# --- HTTP conventions -------------------------------------------------------------------------


@pytest.mark.model
def test_metrics_answer_without_a_redirect(http):
    http.post("/retrieve", json={"query": "restart"}, headers=A)
    r = http.get("/metrics", follow_redirects=False)
    assert r.status_code == 200 and "freshrag_api_request_seconds" in r.text
    assert r.headers["content-type"].startswith("text/plain")


@pytest.mark.model
def test_a_bare_key_is_told_to_send_bearer(http):
    r = http.post("/retrieve", json={"query": "x"}, headers={"Authorization": "key-a"})
    assert r.status_code == 401
    assert r.json()["detail"].startswith("Authorization header must be 'Bearer <key>'")
    assert r.headers["www-authenticate"] == "Bearer"
    assert http.get("/prompts", headers={"X-API-Key": "key-a"}).status_code == 200
    assert http.get("/prompts", headers={"Authorization": "bearer key-a"}).status_code == 200
    assert http.get("/prompts").json()["detail"].startswith("missing API key")


@pytest.mark.model
def test_openapi_describes_limits_errors_and_security(http):
    doc = http.get("/openapi.json").json()
    req = doc["components"]["schemas"]["RetrieveRequest"]["properties"]
    assert req["query"]["maxLength"] == 200 and req["top_k"]["maximum"] == 20
    retrieve = doc["paths"]["/retrieve"]["post"]["responses"]
    assert {"401", "413", "422", "503"} <= set(retrieve)
    assert retrieve["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "ValidationProblem"
    )
    assert "504" in doc["paths"]["/answer"]["post"]["responses"]
    assert {"202", "404"} <= set(doc["paths"]["/documents/{doc_id}"]["get"]["responses"])
    assert {"HTTPBearer", "APIKeyHeader"} <= set(doc["components"]["securitySchemes"])


# --- lookups reveal nothing about unreadable documents ----------------------------------------


@pytest.mark.model
def test_lookups_do_not_depend_on_data_the_caller_cannot_read(http):
    def detail(doc_id: str, **params: object) -> tuple[int, str]:
        r = http.get(f"/documents/{doc_id}", params=params, headers=A)
        return r.status_code, r.json()["detail"].replace(f"'{doc_id}'", "'X'")

    # pricing exists, secret is a tombstone, never never existed: all unreadable for key-a.
    for params in ({}, {"min_version": 1, "wait": 0}, {"min_version": 7, "wait": 0.2}):
        answers = {detail(d, **params) for d in ("pricing", "secret", "never")}
        assert len(answers) == 1, answers
    assert detail("never") == (404, "document 'X' is not indexed")
    assert detail("never", min_version=1, wait=0)[1].endswith("(indexed: nothing)")
    # The sales key may read the tombstone, and is told about it.
    r = http.get("/documents/secret", headers=SALES)
    assert r.status_code == 404 and "deleted at version 2" in r.json()["detail"]
    r = http.get("/documents/secret", params={"min_version": 5, "wait": 0}, headers=SALES)
    assert r.status_code == 202 and "indexed: version 2" in r.json()["detail"]
    assert (r.json()["version"], r.json()["deleted"]) == (2, True)


# --- long-polls, lanes and /healthz -----------------------------------------------------------


@pytest.mark.model
def test_long_polls_do_not_block_the_rest_of_the_api(live):
    async def main() -> tuple[dict[str, float], int, list[httpx.Response]]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=live["url"], timeout=30, limits=limits) as c:
            polls = [
                asyncio.create_task(
                    c.get(
                        f"/documents/never-{i % 3}",
                        params={"min_version": 1, "wait": 20},
                        headers=A,
                    )
                )
                for i in range(60)
            ]
            await asyncio.sleep(1.0)  # all 60 in flight
            took: dict[str, float] = {}
            for name, call, status in [
                ("healthz", lambda: c.get("/healthz"), 200),
                ("unauthenticated", lambda: c.post("/retrieve", json={"query": "x"}), 401),
                (
                    "retrieve",
                    lambda: c.post("/retrieve", json={"query": "restart"}, headers=A),
                    200,
                ),
                ("document", lambda: c.get("/documents/runbook", headers=A), 200),
            ]:
                started = time.monotonic()
                r = await call()
                took[name] = time.monotonic() - started
                assert r.status_code == status, (name, r.text)
            waiting = sum(not p.done() for p in polls)
            return took, waiting, await asyncio.gather(*polls)

    took, waiting, polls = asyncio.run(main())
    # With a 40-thread pool and sleeping waits these took 17-19 s; no thread is spent waiting now.
    assert max(took.values()) < 2.0, took
    assert waiting == 60, "the long-polls should still have been waiting"
    assert {r.status_code for r in polls} == {202}
    assert all("indexed: nothing" in r.json()["detail"] for r in polls)


@pytest.mark.model
def test_notify_wakes_a_long_poll_at_once(live, http, monkeypatch):
    index, watch = live["index"], live["services"].watch
    reads: list[str] = []
    get_document = index.get_document

    def counted(tenant: str, doc_id: str) -> DocumentState | None:
        reads.append(doc_id)
        return get_document(tenant, doc_id)

    monkeypatch.setattr(index, "get_document", counted)
    result: dict[str, object] = {}

    def poll() -> None:
        result["response"] = http.get(
            "/documents/fresh", params={"min_version": 1, "wait": 20}, headers=A
        )
        result["at"] = time.monotonic()

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(1.0)
    assert "response" not in result
    assert reads.count("fresh") == 1, "a waiter reads once, then sleeps until notified"
    index.put_document(
        DocumentState("acme", "fresh", 1, False, 1, "2025-01-01T00:00:00Z", acl=["eng"])
    )
    watch.notify("acme", "unrelated")  # another document's write does not wake it
    notified = time.monotonic()
    watch.notify("acme", "fresh")
    t.join(10)
    r = result["response"]
    assert r.status_code == 200 and r.json()["version"] == 1
    assert result["at"] - notified < 0.3  # the fallback re-read is 30 s away
    assert reads.count("fresh") == 2


@pytest.mark.model
def test_waiters_re_read_without_notify(tmp_path, edge_index, dense, sparse):
    """Another process's worker cannot notify: the fallback re-read still finds the version."""
    settings = make_settings(tmp_path)
    services = Services(
        settings,
        edge_index,
        Retriever(edge_index, dense, sparse),
        KeyStore(settings.api_keys),
        lambda: True,
        watch=DocumentWatch(fallback_s=0.2),
    )

    def later() -> None:
        time.sleep(0.5)
        edge_index.put_document(
            DocumentState("acme", "late", 3, False, 1, "2025-01-01T00:00:00Z", acl=["eng"])
        )

    with TestClient(create_app(services)) as client:
        t = threading.Thread(target=later)
        t.start()
        started = time.monotonic()
        r = client.get("/documents/late", params={"min_version": 3, "wait": 10}, headers=A)
        t.join()
    assert r.status_code == 200 and r.json()["version"] == 3
    assert time.monotonic() - started < 3


@pytest.mark.unit
def test_notify_before_the_loop_exists_is_a_no_op():
    watch = DocumentWatch()
    watch.notify("acme", "x")  # no loop bound yet
    loop = asyncio.new_event_loop()
    watch.bind(loop)
    loop.close()
    watch.notify("acme", "x")  # closed loop: still no error


@pytest.mark.unit
def test_a_full_lane_answers_503_with_retry_after():
    async def main() -> None:
        lane = Lane("retrieve", 1, queue=1)
        release = threading.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(lane.run, release.wait)  # holds the only thread
            tg.start_soon(lane.run, release.wait)  # queues
            await anyio.sleep(0.2)
            with pytest.raises(LaneFull) as full:
                await lane.run(release.wait)
            assert full.value.retry_after_s >= 1 and "retry" in str(full.value)
            release.set()

    anyio.run(main)


@pytest.mark.model
def test_busy_lane_is_a_503_and_healthz_still_answers(tmp_path, edge_index, dense, sparse):
    settings = make_settings(tmp_path, retrieve_concurrency=1, lane_queue=0)
    release, entered = threading.Event(), threading.Event()

    class StuckRetriever(Retriever):
        def retrieve(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            entered.set()
            release.wait(10)
            return []

    services = Services(
        settings,
        edge_index,
        StuckRetriever(edge_index, dense, sparse),
        KeyStore(settings.api_keys),
        lambda: True,
    )
    with TestClient(create_app(services)) as client:
        first: dict[str, httpx.Response] = {}
        t = threading.Thread(
            target=lambda: first.update(r=client.post("/retrieve", json={"query": "x"}, headers=A))
        )
        t.start()
        assert entered.wait(10)
        r = client.post("/retrieve", json={"query": "x"}, headers=A)
        assert client.get("/healthz").status_code == 200
        release.set()
        t.join(10)
    assert r.status_code == 503 and r.headers["retry-after"] == "1"
    assert "busy" in r.json()["detail"]
    assert first["r"].status_code == 200


@pytest.mark.model
def test_an_answer_past_its_deadline_is_a_504(tmp_path, edge_index, dense, sparse):
    settings = make_settings(tmp_path)
    services = make_services(settings, edge_index, dense, sparse)

    class Late:
        def answer(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise TimeoutError("no provider answered within the 45 s answer deadline")

    services.answers = Late()
    with TestClient(create_app(services)) as client:
        r = client.post("/answer", json={"query": "x"}, headers=A)
    assert r.status_code == 504 and "answer deadline" in r.json()["detail"]
