"""Which records a batch takes, and how far a partition's offset may be committed.

Pure functions over polled records (anything with `topic`, `partition`, `offset`): the
worker's two lanes (live, bulk) and its at-least-once commits are decided here, so they
can be tested without a broker.
"""

from __future__ import annotations

from kafka.structs import TopicPartition


def record_partition(record) -> TopicPartition:  # noqa: ANN001
    return TopicPartition(record.topic, record.partition)


def take_round_robin(records: list, n: int) -> tuple[list, list]:
    """Up to `n` records, fairly across partitions, each partition's in offset order."""
    by_tp: dict[tuple[str, int], list] = {}
    for r in records:
        by_tp.setdefault((r.topic, r.partition), []).append(r)
    queues = [sorted(rs, key=lambda r: r.offset) for rs in by_tp.values()]
    taken: list = []
    while len(taken) < n and any(queues):
        for q in queues:
            if q and len(taken) < n:
                taken.append(q.pop(0))
    return taken, [r for q in queues for r in q]


def take_bulk(backlog: list, n: int, backfill_topic: str) -> tuple[list, list]:
    """A bulk turn's records: long live documents first (someone is waiting for each),
    then backfill events, each kind round-robin over its partitions."""
    live = [r for r in backlog if r.topic != backfill_topic]
    taken, left_live = take_round_robin(live, n)
    bulk, left_bulk = take_round_robin(
        [r for r in backlog if r.topic == backfill_topic], n - len(taken)
    )
    return taken + bulk, left_live + left_bulk


def first_offsets(records: list) -> dict[TopicPartition, int]:
    """Per partition, the lowest offset among `records`."""
    out: dict[TopicPartition, int] = {}
    for r in records:
        out[record_partition(r)] = min(out.get(record_partition(r), r.offset), r.offset)
    return out


def commit_offsets(
    applied: dict[TopicPartition, int], held: list, committed: dict[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """What to commit: per partition, past the last record applied (`applied`: offset + 1),
    but never past a record still `held` (not applied yet, or waiting in the bulk lane: a
    long live document deferred behind later edits of its partition), and only where that
    moves forward."""
    offsets = dict(applied)
    for tp, first in first_offsets(held).items():
        if tp in offsets:
            offsets[tp] = min(offsets[tp], first)
    return {tp: o for tp, o in offsets.items() if o > committed.get(tp, -1)}
