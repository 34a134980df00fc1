"""Publishing over HTTP (POST and DELETE /documents) against the real Tansu broker: what a
key may publish (its right, its tenant, its groups), a batch checked whole before any of it
is sent, replies only once the broker acknowledged every record, the backfill lane, body
limits, and a 503 (never a silent loss) when the broker cannot be reached."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from api.app import Services, create_app
from api.auth import KeyStore, may_publish
from freshrag.runtime import ServerThread
from freshrag.settings import Settings
from ingest.broker import ensure_topics
from tests.conftest import (
    free_port,
    make_indexer,
    make_services,
    make_settings,
    open_backend,
    running_worker,
    wait_for,
)

KEYS = {
    "pub-a": {"tenant": "acme", "groups": ["eng"], "publish": True},
    "pub-a-sales": {"tenant": "acme", "groups": ["sales"], "publish": True},
    "read-a": {"tenant": "acme", "groups": ["eng"]},
    "pub-b": {"tenant": "globex", "groups": ["eng"], "publish": True},
}
A = {"Authorization": "Bearer pub-a"}
A_SALES = {"X-API-Key": "pub-a-sales"}
A_READER = {"Authorization": "Bearer read-a"}
B = {"Authorization": "Bearer pub-b"}


def event(doc_id: str, version: int = 1, **fields) -> dict:  # noqa: ANN003
    return {
        "op": "upsert",
        "doc_id": doc_id,
        "version": version,
        "acl": ["eng"],
        "mime": "text/markdown",
        "content": f"# {doc_id}\n\nThe body of {doc_id}.",
        **fields,
    }


def end_offsets(settings: Settings, topic: str) -> int:
    """The sum of the topic's end offsets: it grows with every batch written, so an equal
    sum means nothing was written (not a count: Tansu reports a partition's end as one
    past the base offset of its last batch)."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def record_at(settings: Settings, topic: str, partition: int, offset: int) -> dict:
    """The event stored at (topic, partition, offset)."""
    consumer = KafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False
    )
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        for _ in range(20):
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    if r.offset == offset:
                        assert r.key == json.loads(r.value)["doc_id"].encode()
                        return json.loads(r.value)
        raise AssertionError(f"no record at {topic}/{partition}@{offset}")
    finally:
        consumer.close()


def publish_settings(tmp_path: Path, bootstrap: str, **overrides) -> Settings:  # noqa: ANN003
    return make_settings(tmp_path, bootstrap, api_keys=KEYS, **overrides)


@pytest.fixture
def pub_settings(tmp_path: Path, broker: str) -> Settings:
    s = publish_settings(tmp_path, broker, max_request_bytes=2048, publish_max_body_bytes=8192)
    ensure_topics(s)
    return s


def light_services(settings: Settings, tmp_path: Path) -> Services:
    """The API's services without the model: publishing reads only the registry."""
    index = open_backend("edge", tmp_path, 384)
    return Services(settings, index, None, KeyStore(settings.api_keys), lambda: True)  # type: ignore[arg-type]


@pytest.fixture
def client(pub_settings: Settings, tmp_path: Path) -> Iterator[TestClient]:
    services = light_services(pub_settings, tmp_path)
    with TestClient(create_app(services)) as c:  # the lifespan closes the producer
        yield c
    services.index.close()


# --- the keys file -------------------------------------------------------------------


@pytest.mark.unit
def test_the_publish_right_is_a_boolean_in_the_keys_file():
    keys = KeyStore(KEYS)
    assert may_publish(keys.principal("pub-a"))
    assert not may_publish(keys.principal("read-a"))
    with pytest.raises(ValueError, match="'publish' must be true or false"):
        KeyStore({"k": {"tenant": "t", "publish": "yes"}})


# --- publishing ----------------------------------------------------------------------


@pytest.mark.broker
def test_a_batch_is_acknowledged_with_each_records_partition_and_offset(client, pub_settings):
    before = end_offsets(pub_settings, pub_settings.topic)
    r = client.post("/documents", json=[event("a"), event("b", 3)], headers=A)
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["topic"] == pub_settings.topic and body["lane"] == "live"
    assert body["tenant"] == "acme"
    assert [(x["doc_id"], x["version"], x["op"]) for x in body["records"]] == [
        ("a", 1, "upsert"),
        ("b", 3, "upsert"),
    ]
    assert end_offsets(pub_settings, pub_settings.topic) > before
    for x in body["records"]:
        stored = record_at(pub_settings, pub_settings.topic, x["partition"], x["offset"])
        assert stored["doc_id"] == x["doc_id"] and stored["tenant"] == "acme"  # the key's

    r = client.post("/documents", json=event("c"), headers=A)  # one event, not a list
    assert r.status_code == 202 and len(r.json()["records"]) == 1


@pytest.mark.broker
@pytest.mark.parametrize(
    ("bad", "loc"),
    [
        ({"version": "7"}, ["body", 1, "version"]),
        ({"version": -1}, ["body", 1, "version"]),
        ({"op": "replace"}, ["body", 1, "op"]),
        ({"doc_id": " padded"}, ["body", 1, "doc_id"]),
        ({"content": None, "content_base64": "not base64!"}, ["body", 1, "content_base64"]),
        ({"unknown": 1}, ["body", 1, "unknown"]),
        ({"tenant": "globex"}, ["body", 1, "tenant"]),
    ],
)
def test_a_bad_event_is_a_422_naming_it_and_nothing_of_the_batch_is_sent(
    client, pub_settings, bad, loc
):
    before = end_offsets(pub_settings, pub_settings.topic)
    batch = [event("good-1"), {**event("bad"), **bad}, event("good-2")]
    r = client.post("/documents", json=batch, headers=A)
    assert r.status_code == 422, r.text
    assert loc in [e["loc"] for e in r.json()["detail"]]
    assert end_offsets(pub_settings, pub_settings.topic) == before


@pytest.mark.broker
def test_malformed_bodies_are_422s(client, pub_settings):
    for body in [b"", b"[]", b"5", b'{"op": "upsert",', b'[{"op": NaN}]']:
        r = client.post(
            "/documents", content=body, headers={**A, "Content-Type": "application/json"}
        )
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"][0]["loc"][0] == "body"
    r = client.post("/documents?lane=sideways", json=event("x"), headers=A)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "lane"]


@pytest.mark.broker
def test_a_key_without_the_publish_right_gets_a_403(client, pub_settings):
    before = end_offsets(pub_settings, pub_settings.topic)
    r = client.post("/documents", json=event("x"), headers=A_READER)
    assert r.status_code == 403 and '"publish": true' in r.json()["detail"]
    r = client.delete("/documents/x", headers=A_READER)
    assert r.status_code == 403 and "publish" in r.json()["detail"]
    assert client.post("/documents", json=event("x")).status_code == 401
    assert end_offsets(pub_settings, pub_settings.topic) == before


@pytest.mark.broker
def test_a_key_grants_only_its_own_groups(client, pub_settings):
    before = end_offsets(pub_settings, pub_settings.topic)
    r = client.post("/documents", json=[event("x"), event("y", acl=["sales"])], headers=A)
    assert r.status_code == 403 and r.json()["detail"].startswith("body[1].acl:")
    no_acl = event("z")
    del no_acl["acl"]  # left out: public, which this key does not have
    r = client.post("/documents", json=no_acl, headers=A)
    assert r.status_code == 403 and "public" in r.json()["detail"]
    assert end_offsets(pub_settings, pub_settings.topic) == before
    r = client.post("/documents", json=event("y", acl=["sales"]), headers=A_SALES)
    assert r.status_code == 202, r.text


@pytest.mark.broker
def test_another_tenant_cannot_publish_into_a_tenant(client, pub_settings):
    before = end_offsets(pub_settings, pub_settings.topic)
    r = client.post("/documents", json=event("x", tenant="acme"), headers=B)
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "tenant"]
    assert "globex" in r.json()["detail"][0]["msg"]
    assert end_offsets(pub_settings, pub_settings.topic) == before
    r = client.post("/documents", json=event("x", tenant="globex"), headers=B)  # its own: fine
    assert r.status_code == 202 and r.json()["tenant"] == "globex"


@pytest.mark.broker
def test_delete_sends_a_delete_event_of_the_keys_tenant(client, pub_settings):
    r = client.delete("/documents/guides/a b.md?version=42", headers=B)
    assert r.status_code == 202, r.text
    (rec,) = r.json()["records"]
    assert (rec["op"], rec["doc_id"], rec["version"]) == ("delete", "guides/a b.md", 42)
    stored = record_at(pub_settings, pub_settings.topic, rec["partition"], rec["offset"])
    assert stored["op"] == "delete" and stored["tenant"] == "globex" and "acl" not in stored

    r = client.delete("/documents/x", headers=A)  # default version: ms since the epoch
    assert r.status_code == 202 and r.json()["records"][0]["version"] > 1_700_000_000_000
    assert client.delete("/documents/x?version=-1", headers=A).status_code == 422
    r = client.delete("/documents/x%20", headers=A)  # trailing whitespace: not an event id
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["path", "doc_id"]


@pytest.mark.broker
def test_lane_backfill_sends_to_the_backfill_topic(client, pub_settings):
    live = end_offsets(pub_settings, pub_settings.topic)
    backfill = end_offsets(pub_settings, pub_settings.backfill_topic)
    r = client.post("/documents?lane=backfill", json=[event("bulk-1"), event("bulk-2")], headers=A)
    assert r.status_code == 202, r.text
    assert r.json()["topic"] == pub_settings.backfill_topic and r.json()["lane"] == "backfill"
    records = r.json()["records"]
    r = client.delete("/documents/bulk-3?lane=backfill&version=5", headers=A)
    assert r.status_code == 202 and r.json()["topic"] == pub_settings.backfill_topic
    records += r.json()["records"]
    stored = [
        record_at(pub_settings, pub_settings.backfill_topic, x["partition"], x["offset"])
        for x in records
    ]
    assert [(e["op"], e["doc_id"]) for e in stored] == [
        ("upsert", "bulk-1"),
        ("upsert", "bulk-2"),
        ("delete", "bulk-3"),
    ]
    assert end_offsets(pub_settings, pub_settings.backfill_topic) > backfill
    assert end_offsets(pub_settings, pub_settings.topic) == live


@pytest.mark.broker
def test_publishing_has_its_own_body_limit(client, pub_settings):
    # Larger than FRESHRAG_MAX_REQUEST_BYTES (2048) but within the publishing limit (8192).
    big = event("big", content="x" * 4000)
    r = client.post("/documents", json=big, headers=A)
    assert r.status_code == 202, r.text
    assert client.post("/retrieve", json={"query": "x" * 4000}, headers=A).status_code == 413

    before = end_offsets(pub_settings, pub_settings.topic)
    r = client.post("/documents", json=event("huge", content="x" * 9000), headers=A)
    assert r.status_code == 413 and "8192" in r.json()["detail"]
    chunked = iter([json.dumps(event("huge", content="x" * 9000)).encode()])  # no length
    r = client.post(
        "/documents", content=chunked, headers={**A, "Content-Type": "application/json"}
    )
    assert r.status_code == 413
    assert end_offsets(pub_settings, pub_settings.topic) == before


@pytest.mark.broker
def test_an_event_over_the_record_limit_is_a_422(tmp_path, broker):
    s = publish_settings(tmp_path, broker, max_event_bytes=2048, publish_max_body_bytes=50_000)
    ensure_topics(s)
    services = light_services(s, tmp_path)
    with TestClient(create_app(services)) as c:
        r = c.post("/documents", json=[event("ok"), event("long", content="y" * 3000)], headers=A)
    services.index.close()
    assert r.status_code == 422
    (err,) = r.json()["detail"]
    assert err["loc"] == ["body", 1] and "FRESHRAG_MAX_EVENT_BYTES" in err["msg"]


@pytest.mark.unit
def test_an_unreachable_broker_is_a_503_not_a_silent_loss(tmp_path):
    closed = f"127.0.0.1:{free_port()}"  # nothing listens there
    s = publish_settings(tmp_path, closed)
    services = light_services(s, tmp_path)
    with TestClient(create_app(services)) as c:
        r = c.post("/documents", json=[event("a"), event("b")], headers=A)
        assert r.status_code == 503
        detail = r.json()["detail"]
        assert closed in detail and "nothing was published" in detail
        assert r.headers["Retry-After"]
        assert "records" not in r.json()
        r = c.delete("/documents/a?version=3", headers=A)
        assert r.status_code == 503 and closed in r.json()["detail"]
        # Still checked first: a bad event is a 422 whether or not the broker is up.
        assert c.post("/documents", json=event("a", version="1"), headers=A).status_code == 422
    services.index.close()


# --- end to end: publish, search, delete ---------------------------------------------


@pytest.mark.broker
@pytest.mark.model
def test_published_documents_become_searchable_and_only_their_tenant_deletes_them(
    tmp_path, broker, edge_index, dense, sparse
):
    settings = publish_settings(tmp_path, broker)
    ensure_topics(settings)
    services = make_services(settings, edge_index, dense, sparse)
    server = ServerThread(create_app(services), "127.0.0.1", free_port()).start()
    doc = event(
        "handbook/deploy.md",
        7,
        title="Deploying",
        content="# Deploying\n\nRun the zeppelin rollout script, then watch the canary.",
        metadata={"team": "platform"},
    )
    query = {"query": "zeppelin rollout script", "top_k": 3}

    def hits(headers: dict) -> list[tuple[str, int]]:
        r = http.post("/retrieve", json=query, headers=headers)
        assert r.status_code == 200, r.text
        return [(h["doc_id"], h["version"]) for h in r.json()["hits"]]

    try:
        with (
            running_worker(settings, make_indexer(edge_index, dense, sparse)) as (_, seen),
            httpx.Client(base_url=server.url, timeout=60) as http,
        ):
            r = http.post("/documents", json=doc, headers=A)
            assert r.status_code == 202, r.text
            r = http.get("/documents/handbook/deploy.md?min_version=7&wait=30", headers=A)
            assert r.status_code == 200, r.text
            assert ("handbook/deploy.md", 7) in hits(A)
            assert hits(B) == []  # tenant globex sees nothing of acme's

            # Tenant B deletes "the same" doc_id: its event carries globex, acme's doc stays.
            r = http.delete("/documents/handbook/deploy.md?version=8", headers=B)
            assert r.status_code == 202 and r.json()["tenant"] == "globex"
            wait_for(lambda: len(seen.statuses("handbook/deploy.md")) >= 2, timeout=60)
            assert ("handbook/deploy.md", 7) in hits(A)

            # A key of acme that cannot read the doc may not delete (or replace) it.
            r = http.delete("/documents/handbook/deploy.md?version=9", headers=A_SALES)
            assert r.status_code == 403 and "cannot read" in r.json()["detail"]
            r = http.post(
                "/documents", json={**doc, "version": 9, "acl": ["sales"]}, headers=A_SALES
            )
            assert r.status_code == 403

            # Its own tenant's key deletes it.
            r = http.delete("/documents/handbook/deploy.md?version=9", headers=A)
            assert r.status_code == 202
            wait_for(
                lambda: http.get("/documents/handbook/deploy.md", headers=A).status_code == 404,
                timeout=60,
            )
            assert hits(A) == []
    finally:
        server.stop()
