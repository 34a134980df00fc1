"""The op log: chunk writes as plain records, appended as they happen and replayable into
another shard (the optimiser's spare)."""

from __future__ import annotations

import pickle
import struct
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import qdrant_edge as qe

from retrieval.store.edge.filters import to_edge_filter
from retrieval.store.schema import DENSE, SPARSE

Record = tuple[Any, ...]
_FRAME = struct.Struct("<I")
# Kinds from `metadata_indexes`, as the op log's field_index records name them.
EDGE_KINDS = {"keyword": "Keyword", "integer": "Integer", "float": "Float", "bool": "Bool"}


def _record_ops(rec: Record) -> list[qe.UpdateOperation]:
    """The Edge update(s) a write record stands for; the live shard and replays use this."""
    kind = rec[0]
    if kind == "upsert":
        return [
            qe.UpdateOperation.upsert_points(
                [
                    qe.Point(
                        pid,
                        {
                            DENSE: dense.tolist() if isinstance(dense, array) else dense,
                            SPARSE: qe.SparseVector(indices=idx, values=vals),
                        },
                        payload,
                    )
                    for pid, dense, idx, vals, payload in rec[1]
                ]
            )
        ]
    if kind == "set_payload":
        return [qe.UpdateOperation.set_payload(rec[1], rec[2])]
    if kind == "set_payload_where":
        return [qe.UpdateOperation.set_payload_by_filter(to_edge_filter(rec[1]), rec[2])]
    if kind == "chunk_indexes":  # in-process calls: no round trip to save
        return [
            qe.UpdateOperation.set_payload([pid], {"chunk_index": n}) for pid, n in rec[1].items()
        ]
    if kind == "delete":
        return [qe.UpdateOperation.delete_points(rec[1])]
    if kind == "delete_where":
        return [qe.UpdateOperation.delete_points_by_filter(to_edge_filter(rec[1]))]
    if kind == "field_index":
        name, schema, on_disk = rec[1], rec[2], rec[3]
        if on_disk and schema == "Keyword":
            params: Any = qe.KeywordIndexParams(memory=qe.Memory.Cold)
        elif on_disk and schema == "Integer":
            params = qe.IntegerIndexParams(lookup=True, range=True, memory=qe.Memory.Cold)
        else:
            params = getattr(qe.PayloadSchemaType, schema)
        return [qe.UpdateOperation.create_field_index(name, params)]
    raise ValueError(f"unknown write record {kind!r}")


def record_points(rec: Record) -> int:
    """Points a record touches (filter writes count as one): what triggers an optimisation."""
    return len(rec[1]) if rec[0] in ("upsert", "set_payload", "chunk_indexes", "delete") else 1


def apply(shard: qe.EdgeShard, rec: Record) -> None:
    for op in _record_ops(rec):
        shard.update(op)


def _packed(rec: Record) -> Record:
    """Dense vectors as float32 arrays: a quarter of a pickled list, and what Edge stores."""
    if rec[0] != "upsert":
        return rec
    return ("upsert", [(p, array("f", d), i, v, pl) for p, d, i, v, pl in rec[1]])


def encode(rec: Record) -> bytes:
    """One record as it is appended to the log: its length, then the pickle."""
    body = pickle.dumps(_packed(rec), protocol=pickle.HIGHEST_PROTOCOL)
    return _FRAME.pack(len(body)) + body


def _read_log(path: Path, offset: int) -> Iterator[tuple[Record, int]]:
    """Complete records from `offset` on, each with the offset after it; stops at a torn tail."""
    with open(path, "rb") as fh:
        fh.seek(offset)
        while True:
            head = fh.read(_FRAME.size)
            if len(head) < _FRAME.size:
                return
            (size,) = _FRAME.unpack(head)
            body = fh.read(size)
            if len(body) < size:
                return
            offset += _FRAME.size + size
            yield pickle.loads(body), offset


def replay(
    shard: qe.EdgeShard, path: Path, offset: int, limit: int | None = None
) -> tuple[int, int]:
    """Applies the log from `offset` (stopping once `limit` points are applied, if given);
    returns (new offset, points touched)."""
    points = 0
    end = offset
    for rec, end in _read_log(path, offset):  # noqa: B007 (the last offset is the result)
        apply(shard, rec)
        points += record_points(rec)
        if limit is not None and points >= limit:
            break
    return end, points


def log_bytes(path: Path, start: int, end: int) -> bytes:
    """The raw records of a log between two offsets."""
    with open(path, "rb") as fh:
        fh.seek(start)
        return fh.read(end - start)
