"""Real servers for the suite, where they exist: a Qdrant server (`FRESHRAG_TEST_QDRANT_URL`)
and Apache Kafka (`FRESHRAG_TEST_KAFKA_BOOTSTRAP`).

The fixtures in tests/conftest.py run the same test bodies against qdrant-client's local
mode and the bundled broker, and against these when given. Without the variable the
real-server variant is skipped, saying so; with one that names nothing usable it fails, so a
typo never passes as a skip. Each test gets its own collection and topic names and removes
what it made, so runs can share one server.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from freshrag.settings import Settings
from ingest.broker import ensure_topics

QDRANT_ENV = "FRESHRAG_TEST_QDRANT_URL"
KAFKA_ENV = "FRESHRAG_TEST_KAFKA_BOOTSTRAP"
# Parameter ids of the real-server variants; tests/conftest.py marks them `servers`.
QDRANT_SERVER = "qdrant-server"
KAFKA_SERVER = "kafka-server"
REAL = frozenset({QDRANT_SERVER, KAFKA_SERVER})
# The tests' consumer session timeout (tests/conftest.py make_settings); a broker's
# group.min.session.timeout.ms above it refuses every join.
TEST_SESSION_TIMEOUT_MS = 3000
_HOW = "see 'Against real servers' in docs/how-to/develop.md"
_checked: dict[str, str | None] = {}  # value -> why it is unusable (None: usable)


def _usable(value: str, check: Any) -> None:
    """Runs `check` once per value and session; fails every test that needs a bad one."""
    if value not in _checked:
        try:
            check(value)
            _checked[value] = None
        except _Unusable as exc:
            _checked[value] = str(exc)
    if _checked[value]:
        pytest.fail(_checked[value], pytrace=False)


class _Unusable(Exception):
    """The variable is set, but to nothing the suite can use."""


# --- Qdrant --------------------------------------------------------------------------------


def qdrant_url() -> str:
    """The Qdrant server to test against: a skip without one, a failure if it does not answer."""
    url = os.environ.get(QDRANT_ENV, "").strip()
    if not url:
        pytest.skip(f"{QDRANT_ENV} is not set: no Qdrant server to test against ({_HOW})")
    _usable(url, check_qdrant)
    return url


def check_qdrant(url: str) -> None:
    where = f"{QDRANT_ENV}={url!r}"
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number in range)
    except ValueError as exc:
        raise _Unusable(f"{where}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _Unusable(f"{where} is not an http(s) URL such as http://localhost:6333")
    client = QdrantClient(url=url, timeout=5)
    try:
        client.get_collections()
    except Exception as exc:
        raise _Unusable(
            f"{where}: no Qdrant server answers there ({type(exc).__name__}: {exc}); "
            f"unset it to skip the real-server tests"
        ) from exc
    finally:
        client.close()


@dataclass
class QdrantTarget:
    """A Qdrant API for one test: qdrant-client's local mode in the test's tmp dir, or a real
    server. Every collection and alias the test makes starts with `prefix`."""

    kind: str
    url: str | None = None
    path: Path | None = None
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}_")

    def connect(self) -> QdrantClient:
        """A new client (local mode: one open client at a time holds the folder)."""
        if self.url:
            return QdrantClient(url=self.url, timeout=30)
        return QdrantClient(path=str(self.path))

    @cached_property
    def client(self) -> QdrantClient:
        return self.connect()

    def name(self, base: str) -> str:
        return self.prefix + base

    def settings(self) -> dict[str, Any]:
        """`make_settings` overrides: this test's collection names and, for a server, its URL
        (then `Core.open` and the generations pointer use the server; else Qdrant Edge)."""
        out: dict[str, Any] = {
            "collection": self.name("chunks"),
            "registry_collection": self.name("documents"),
        }
        if self.url:
            out["qdrant_url"] = self.url
        return out

    def collections(self) -> list[str]:
        """This test's collections, read over a new connection (an adapter's close or drop
        closes its client)."""
        self._close()
        client = self.connect()
        try:
            return sorted(self._mine(c.name for c in client.get_collections().collections))
        finally:
            client.close()

    def cleanup(self) -> None:
        """Removes this test's aliases and collections (on a shared server, only those)."""
        self._close()
        client = self.connect()
        try:
            aliases = self._mine(a.alias_name for a in client.get_aliases().aliases)
            if aliases:
                client.update_collection_aliases(
                    change_aliases_operations=[
                        qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=a))
                        for a in aliases
                    ]
                )
            for name in self._mine(c.name for c in client.get_collections().collections):
                client.delete_collection(name)
        finally:
            client.close()

    def _mine(self, names: Any) -> list[str]:
        return [n for n in names if n.startswith(self.prefix)]

    def _close(self) -> None:
        if "client" in self.__dict__:
            self.__dict__.pop("client").close()


@contextmanager
def qdrant_target(kind: str, tmp_path: Path) -> Iterator[QdrantTarget]:
    """`kind` QDRANT_SERVER: the server (or a skip or failure, see `qdrant_url`); any other:
    local mode under `tmp_path`."""
    if kind == QDRANT_SERVER:
        target = QdrantTarget(kind, url=qdrant_url())
    else:
        target = QdrantTarget(kind, path=tmp_path / "qdrant-local")
    try:
        yield target
    finally:
        target.cleanup()


# --- Kafka ---------------------------------------------------------------------------------

_HOST_PORT = re.compile(r"[A-Za-z0-9.\-]+:\d{1,5}|\[[0-9A-Fa-f:.]+\]:\d{1,5}")


def kafka_bootstrap() -> str:
    """The Kafka to test against: a skip without one, a failure if it does not answer."""
    servers = os.environ.get(KAFKA_ENV, "").strip()
    if not servers:
        pytest.skip(f"{KAFKA_ENV} is not set: no Apache Kafka to test against ({_HOW})")
    _usable(servers, check_kafka)
    return servers


def _admin(servers: str) -> Any:
    from kafka.admin import KafkaAdminClient

    return KafkaAdminClient(
        bootstrap_servers=servers.split(","), request_timeout_ms=5000, bootstrap_timeout_ms=5000
    )


def check_kafka(servers: str) -> None:
    where = f"{KAFKA_ENV}={servers!r}"
    bad = [s for s in servers.split(",") if not _HOST_PORT.fullmatch(s.strip())]
    if bad:
        raise _Unusable(f"{where}: {bad[0]!r} is not host:port (e.g. localhost:9092)")
    admin = None
    try:
        admin = _admin(servers)
        admin.list_topics()
        floor = _min_session_timeout_ms(admin)
    except Exception as exc:
        raise _Unusable(
            f"{where}: no Kafka broker answers there ({type(exc).__name__}: {exc}); "
            f"unset it to skip the real-server tests"
        ) from exc
    finally:
        if admin is not None:
            admin.close()
    if floor is not None and floor > TEST_SESSION_TIMEOUT_MS:
        raise _Unusable(
            f"{where}: the broker's group.min.session.timeout.ms is {floor}, above the tests' "
            f"{TEST_SESSION_TIMEOUT_MS} ms session timeout, so no test consumer could join; "
            "set it to 1000 (KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS in the apache/kafka image)"
        )


def _min_session_timeout_ms(admin: Any) -> int | None:
    """The broker's group.min.session.timeout.ms; None where it cannot be read (Tansu
    answers no DescribeConfigs: the join itself would tell)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    key = "group.min.session.timeout.ms"
    try:
        broker = str(admin.describe_cluster()["brokers"][0]["broker_id"])
        found = admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, broker, {key: None})], config_filter="all"
        )
        return int(found["broker"][broker][key]["value"])
    except Exception:
        return None


@dataclass
class KafkaTarget:
    """A Kafka-protocol broker for one test: the bundled Tansu broker or a real Kafka. On a
    real one the topics and consumer groups made through `topics()` are deleted after."""

    kind: str
    bootstrap: str
    made: list[Settings] = field(default_factory=list)

    def topics(self, settings: Settings) -> Settings:
        """Creates the topics `settings` names (unique per test: `make_settings`)."""
        ensure_topics(settings)
        self.made.append(settings)
        return settings

    def cleanup(self) -> None:
        if self.kind != KAFKA_SERVER or not self.made:
            return
        admin = _admin(self.bootstrap)
        try:
            existing = set(admin.list_topics())
            topics = [
                t
                for s in self.made
                for t in (s.topic, s.backfill_topic, s.dlq_topic)
                if t in existing
            ]
            if topics:
                admin.delete_topics(topics)
            # The generations' groups are `<consumer_group>.g<n>.<time>`.
            prefixes = tuple(s.consumer_group for s in self.made)
            groups = [
                g["group_id"] for g in admin.list_groups() if g["group_id"].startswith(prefixes)
            ]
            if groups:
                admin.delete_groups(groups)
        finally:
            admin.close()
