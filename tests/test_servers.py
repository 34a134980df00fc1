"""The real-server switches of the suite (tests/servers.py): an unset variable is a skip that
says why; one set to anything unusable fails, never skips; a test's collections and topics
are its own and are removed after it, and nothing of another test's."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from kafka.admin import KafkaAdminClient
from qdrant_client import models as qm

from freshrag.generations.pointer import (
    Generations,
    ServerPointer,
    first_generation,
    new_generation,
)
from ingest.broker import ensure_topics
from tests.conftest import free_port, make_settings
from tests.servers import (
    KAFKA_ENV,
    KAFKA_SERVER,
    QDRANT_ENV,
    QDRANT_SERVER,
    KafkaTarget,
    QdrantTarget,
    check_kafka,
    kafka_bootstrap,
    qdrant_url,
)


@pytest.mark.unit
def test_unset_variables_skip_the_real_server_variants_saying_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(QDRANT_ENV, raising=False)
    monkeypatch.setenv(KAFKA_ENV, "  ")  # blank is unset
    with pytest.raises(pytest.skip.Exception, match=f"{QDRANT_ENV} is not set"):
        qdrant_url()
    with pytest.raises(pytest.skip.Exception, match=f"{KAFKA_ENV} is not set"):
        kafka_bootstrap()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("localhost:6333", r"not an http\(s\) URL"),
        ("htp://localhost:6333", r"not an http\(s\) URL"),
        ("http//localhost:6333", r"not an http\(s\) URL"),
        ("http://localhost:6333x", "Port could not be cast"),
        ("http://localhost:633300", "Port out of range"),
    ],
)
def test_a_malformed_qdrant_url_fails(monkeypatch: pytest.MonkeyPatch, url: str, why: str) -> None:
    monkeypatch.setenv(QDRANT_ENV, url)
    with pytest.raises(pytest.fail.Exception, match=why):
        qdrant_url()


class _NotQdrant(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        self.send_response(404)
        self.end_headers()
        self.wfile.write(b"<html>not here</html>")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def not_qdrant() -> Iterator[str]:
    """An HTTP server that is not Qdrant (a proxy or another service on the port)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotQdrant)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.unit
def test_a_qdrant_url_where_no_qdrant_answers_fails_through_the_url_client(
    monkeypatch: pytest.MonkeyPatch, not_qdrant: str
) -> None:
    """The variant's URL client is built and asked: refused, or answered by something else."""
    for url in (f"http://127.0.0.1:{free_port()}", not_qdrant):
        monkeypatch.setenv(QDRANT_ENV, url)
        with pytest.raises(pytest.fail.Exception, match="no Qdrant server answers there"):
            qdrant_url()
        client = QdrantTarget(QDRANT_SERVER, url=url).connect()
        try:
            with pytest.raises(Exception, match="Connection refused|404"):
                client.get_collections()
        finally:
            client.close()


@pytest.mark.unit
@pytest.mark.parametrize(
    "servers", ["localhost", "localhost:90x2", "localhost:9092,", "kafka://localhost:9092"]
)
def test_a_malformed_kafka_bootstrap_fails(monkeypatch: pytest.MonkeyPatch, servers: str) -> None:
    monkeypatch.setenv(KAFKA_ENV, servers)
    with pytest.raises(pytest.fail.Exception, match="is not host:port"):
        kafka_bootstrap()


@pytest.mark.unit
def test_a_kafka_bootstrap_where_no_broker_answers_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KAFKA_ENV, f"127.0.0.1:{free_port()}")
    with pytest.raises(pytest.fail.Exception, match="no Kafka broker answers there"):
        kafka_bootstrap()


@pytest.mark.unit
def test_a_tests_names_carry_its_prefix_down_to_the_generations_and_aliases(
    tmp_path: Path,
) -> None:
    """On a shared server every name a test's settings lead to is its own."""
    server = QdrantTarget(QDRANT_SERVER, url="http://qdrant.invalid:6333")
    local = QdrantTarget("local", path=tmp_path / "q")
    assert server.settings()["qdrant_url"] == server.url
    assert "qdrant_url" not in local.settings()  # locally the cores stay on Qdrant Edge
    settings = make_settings(tmp_path, **server.settings())
    g1 = first_generation(settings)
    g2 = new_generation(settings, Generations(g1), "m2")
    pointer = ServerPointer(None, settings.collection)
    names = [settings.collection, settings.registry_collection, pointer.record, *pointer.aliases]
    names += [g.collection for g in (g1, g2)] + [g.registry for g in (g1, g2)]
    assert all(n.startswith(server.prefix) for n in names), names
    assert server.prefix != local.prefix


@pytest.mark.unit
def test_cleanup_removes_the_tests_own_collections_and_aliases_only(tmp_path: Path) -> None:
    mine = QdrantTarget("local", path=tmp_path / "q")
    other = QdrantTarget("local", path=tmp_path / "q")  # another test on the same server
    client = mine.client
    for name in (mine.name("a"), mine.name("b"), other.name("a")):
        client.create_collection(name, vectors_config={})
    client.update_collection_aliases(
        change_aliases_operations=[
            qm.CreateAliasOperation(
                create_alias=qm.CreateAlias(collection_name=t.name("a"), alias_name=t.name("s"))
            )
            for t in (mine, other)
        ]
    )
    assert mine.collections() == [mine.name("a"), mine.name("b")]
    mine.cleanup()
    assert mine.collections() == []
    assert other.collections() == [other.name("a")]
    client = other.connect()
    try:
        aliases = {a.alias_name for a in client.get_aliases().aliases}
    finally:
        client.close()
    assert aliases == {other.name("s")}


@pytest.mark.broker
def test_a_kafka_target_passes_the_check_and_removes_only_its_own_topics(
    broker: str, tmp_path: Path
) -> None:
    """The bundled broker speaks the Kafka protocol, so it stands in for a real Kafka here."""
    check_kafka(broker)
    target = KafkaTarget(KAFKA_SERVER, broker)
    mine = target.topics(make_settings(tmp_path, broker))
    other = make_settings(tmp_path, broker)  # another test's topics on the same broker
    ensure_topics(other)
    target.cleanup()
    admin = KafkaAdminClient(bootstrap_servers=[broker])
    try:
        topics = set(admin.list_topics())
    finally:
        admin.close()
    assert not {mine.topic, mine.backfill_topic, mine.dlq_topic} & topics
    assert {other.topic, other.backfill_topic, other.dlq_topic} <= topics
    # The bundled broker's topics stay: it is the suite's own, shared by the session.
    KafkaTarget("bundled", broker, [other]).cleanup()
    admin = KafkaAdminClient(bootstrap_servers=[broker])
    try:
        assert other.topic in admin.list_topics()
    finally:
        admin.close()
