"""`freshrag publish --backfill` and `freshrag sync --backfill` against the real Tansu broker:
the events land on the backfill topic, none on the live one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from freshrag.cli import cli
from freshrag.settings import Settings
from tests.conftest import read_topic

pytestmark = pytest.mark.broker


def _env(settings: Settings) -> dict[str, str]:
    return {
        "FRESHRAG_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "FRESHRAG_TOPIC": settings.topic,
        "FRESHRAG_BACKFILL_TOPIC": settings.backfill_topic,
        "FRESHRAG_DATA_DIR": str(settings.data_dir),
    }


def _doc_ids(settings: Settings, topic: str, expected: int) -> list[tuple[str, str]]:
    records = read_topic(settings, topic, expected)
    return sorted((json.loads(r.value)["op"], json.loads(r.value)["doc_id"]) for r in records)


def _written(settings: Settings, topic: str) -> int:
    """The sum of the topic's end offsets: 0 while nothing was ever written to it."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers)
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def test_publish_and_sync_backfill_send_to_the_backfill_topic(settings: Settings, tmp_path: Path):
    runner = CliRunner()
    env = _env(settings)
    docs = tmp_path / "bulk"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nalpha")
    (docs / "b.md").write_text("# B\n\nbeta")

    r = runner.invoke(cli, ["publish", str(docs / "a.md"), "--backfill"], env=env)
    assert r.exit_code == 0, r.output
    assert f"to {settings.backfill_topic} on" in r.output
    r = runner.invoke(cli, ["publish", "--delete", "--doc-id", "old", "--backfill"], env=env)
    assert r.exit_code == 0, r.output

    r = runner.invoke(cli, ["sync", str(docs), "--prefix", "kb/", "--backfill"], env=env)
    assert r.exit_code == 0, r.output
    assert f"→ {settings.backfill_topic} on" in r.output

    assert _doc_ids(settings, settings.backfill_topic, 4) == [
        ("delete", "old"),
        ("upsert", "a.md"),
        ("upsert", "kb/a.md"),
        ("upsert", "kb/b.md"),
    ]
    assert _written(settings, settings.topic) == 0

    # The sync record is shared by both lanes: a live pass after the bulk load sends only
    # what changed since.
    (docs / "b.md").write_text("# B\n\nbeta, edited")
    r = runner.invoke(cli, ["sync", str(docs), "--prefix", "kb/"], env=env)
    assert r.exit_code == 0 and "1 new or changed, 0 deleted, 1 unchanged" in r.output
    assert _doc_ids(settings, settings.topic, 1) == [("upsert", "kb/b.md")]
