"""Qdrant Edge adapter: the Qdrant engine in-process, one shard directory per collection.

A shard belongs to one process, so in embedded mode the worker and the API share it.

Keeping the chunks shard fast as it grows. Edge builds HNSW graphs, merges segments and
vacuums deleted points only inside `EdgeShard.optimize()`, and that call (like every Edge
call) holds the GIL until it returns: run in a thread of this process it freezes every
query and write for its whole duration (seconds at 30k points, minutes at 500k). A second
process cannot open a live shard either (its WAL is locked). So optimisation runs in a
short-lived child process on a *spare* copy of the shard, and the copies take turns:

    live dir (serving)  ◄── writes, each also appended to an op log
    spare dir (child)   ◄── the child replays the op log, optimize(), replays the tail,
                            closes it and reads its files back into the page cache
    swap (this process) ──► load the spare, replay the last few logged writes into it,
                            make it live; the old live dir becomes the spare

Queries stop only while the warm spare is loaded and the old shard closed (both hold
the GIL), writes also while the last few logged writes are replayed; `bench/scale.py`
measures these pauses at 100k–1M points.
The live dir name is kept in `<collection>.edge-state.json`; without that file the shard is
`<collection>/` as before, so existing shards keep loading.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import qdrant_edge as qe

from freshrag.files import replace_atomically, sync_file
from retrieval.encoders import SparseVec
from retrieval.index import (
    DENSE,
    INTEGER_INDEXES,
    KEYWORD_INDEXES,
    SPARSE,
    ChunkPoint,
    Condition,
    DocKey,
    DocumentState,
    Fusion,
    Match,
    MatchAny,
    Prefix,
    Range,
    SearchHit,
    SearchMode,
    StoredChunk,
    document_point_id,
    documents_filter,
    group_by_document,
    metadata_indexes,
    prefetch_limit,
    split_negated,
    stored_chunks,
)
from retrieval.memory import drop_mapped_pages, memory_limit_bytes, rss_mb, trim_heap

log = logging.getLogger(__name__)

_PAGE = 512
_FILTERED_BY_EVERY_QUERY = frozenset({"tenant", "acl"})  # their indexes stay in RAM


def _condition(c: Condition) -> qe.FieldCondition:
    if isinstance(c, Match):
        return qe.FieldCondition(c.field, match=qe.MatchValue(c.value))
    if isinstance(c, MatchAny):
        return qe.FieldCondition(c.field, match=qe.MatchAny(list(c.values)))
    if isinstance(c, Range):
        return qe.FieldCondition(
            c.field, range=qe.RangeFloat(gte=c.gte, gt=c.gt, lte=c.lte, lt=c.lt)
        )
    if isinstance(c, Prefix):
        return qe.FieldCondition(c.field, match=qe.MatchPrefix(c.prefix))
    raise TypeError(f"unknown condition {c!r}")


def to_edge_filter(conditions: list[Condition]) -> qe.Filter | None:
    if not conditions:
        return None
    must, must_not = split_negated(conditions)
    return qe.Filter(
        must=[_condition(c) for c in must], must_not=[_condition(c) for c in must_not] or None
    )


def _sparse(v: SparseVec) -> qe.SparseVector:
    return qe.SparseVector(indices=v.indices, values=v.values)


def _opened(shard: qe.EdgeShard | None) -> qe.EdgeShard:
    if shard is None:
        raise RuntimeError("index not initialised: call ensure_schema(dim) first")
    return shard


# Kinds from `metadata_indexes`, as the op log's field_index records name them.
_EDGE_KINDS = {"keyword": "Keyword", "integer": "Integer", "float": "Float", "bool": "Bool"}


def _ensure_payload_indexes(shard: qe.EdgeShard, wanted: dict[str, qe.PayloadSchemaType]) -> None:
    existing = set(shard.info().payload_schema)
    for name, kind in wanted.items():
        if name not in existing:
            shard.update(qe.UpdateOperation.create_field_index(name, kind))


class ShardBusy(RuntimeError):
    """Another process (or another store in this one) has the collection open."""


def _lock_collection(root: Path, collection: str) -> int:
    """Takes `<collection>.lock` (flock, released when the fd closes or the process dies);
    returns its fd. Edge locks each shard dir's WAL, but the a/b pair, the state file and
    the op logs belong to whoever holds this: the service or `freshrag optimize`."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / f"{collection}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ShardBusy(f"{root / collection} is open in another process") from None
    return fd


def _open_shard(path: Path, config: qe.EdgeConfig) -> qe.EdgeShard:
    if (path / "edge_config.json").exists():
        return qe.EdgeShard.load(str(path), config)
    path.mkdir(parents=True, exist_ok=True)
    return qe.EdgeShard.create(str(path), config)


# --- tuning of the chunks shard ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EdgeTuning:
    """How the chunks shard is indexed, searched and kept optimised (FRESHRAG_EDGE_* settings).

    Defaults suit 2 cores: one niced indexing thread in the child leaves a core to serve.
    """

    optimizer: Literal["process", "off"] = "process"
    optimize_after_points: int = 20_000
    optimize_interval_s: float = 120.0
    optimize_threads: int = 1
    optimize_nice: int = 10
    segments: int = 6
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    search_ef: int = 512
    quantization: Literal["none", "int8"] = "int8"
    oversampling: float = 2.0
    on_disk: bool = True

    @classmethod
    def from_settings(cls, settings: Any) -> EdgeTuning:
        """The `edge_*` fields of `freshrag.settings.Settings`."""
        return cls(
            optimizer=settings.edge_optimizer,
            optimize_after_points=settings.edge_optimize_after_points,
            optimize_interval_s=settings.edge_optimize_interval_s,
            optimize_threads=settings.edge_optimize_threads,
            optimize_nice=settings.edge_optimize_nice,
            segments=settings.edge_segments,
            hnsw_m=settings.edge_hnsw_m,
            hnsw_ef_construct=settings.edge_hnsw_ef_construct,
            search_ef=settings.edge_search_ef,
            quantization=settings.edge_quantization,
            oversampling=settings.edge_quantization_oversampling,
            on_disk=settings.edge_on_disk,
        )


def chunks_config(dense_dim: int, tuning: EdgeTuning | None) -> qe.EdgeConfig:
    """Schema of the chunks shard; with tuning also its HNSW, quantization and placement.

    Loading an existing shard with this config rewrites its `edge_config.json`; segments
    built under the old config are rebuilt by the next optimisation (in the child).

    With `on_disk`, every part of a sealed segment is memory-mapped (the child's warm-up
    leaves it in the page cache): an optimiser swap's load holds the GIL while it copies
    whatever is held in RAM, and at 1M points int8 vectors, HNSW graph and sparse index
    in RAM made that load twice as long as mapped, for the same query latency (measured
    with a one-off script; issue 12's closing note has the figures).
    """
    if tuning is None:
        dense = qe.EdgeVectorParams(size=dense_dim, distance=qe.Distance.Cosine)
        sparse = {SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)}
        return qe.EdgeConfig(vectors={DENSE: dense}, sparse_vectors=sparse)
    cold = qe.Memory.Cold if tuning.on_disk else None
    dense = qe.EdgeVectorParams(size=dense_dim, distance=qe.Distance.Cosine, memory=cold)
    sparse = {SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf, memory=cold)}
    quantization = (
        qe.ScalarQuantizationConfig(
            qe.ScalarType.Int8, quantile=0.99, memory=cold or qe.Memory.Pinned
        )
        if tuning.quantization == "int8"
        else None
    )
    return qe.EdgeConfig(
        vectors={DENSE: dense},
        sparse_vectors=sparse,
        hnsw_config=qe.HnswIndexConfig(
            m=tuning.hnsw_m,
            ef_construct=tuning.hnsw_ef_construct,
            full_scan_threshold=10_000,  # KB, Qdrant's default: small filtered sets scan exactly
            max_indexing_threads=tuning.optimize_threads,
            memory=cold,
        ),
        quantization_config=quantization,
        payload_memory=cold,
        # Segments the merge optimiser aims for. Edge's automatic target on 2 cores merged
        # every new batch back into the big segment (7 s per 10k new points at 100k, an
        # HNSW rebuild); with room for a few, a batch is indexed on its own (0.8 s).
        optimizers=qe.EdgeOptimizersConfig(default_segment_number=tuning.segments),
    )


def search_params(tuning: EdgeTuning | None) -> qe.SearchParams | None:
    """Dense search: HNSW beam width, and int8 candidates rescored with the originals."""
    if tuning is None:
        return None
    quantization = (
        qe.QuantizationSearchParams(rescore=True, oversampling=tuning.oversampling)
        if tuning.quantization == "int8"
        else qe.QuantizationSearchParams(ignore=True)  # a shard quantized earlier keeps it
    )
    return qe.SearchParams(hnsw_ef=tuning.search_ef, quantization=quantization)


# --- the op log: chunk writes as plain records, replayable into another shard ------------

Record = tuple[Any, ...]
_FRAME = struct.Struct("<I")


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


def _record_points(rec: Record) -> int:
    """Points a record touches (filter writes count as one): what triggers an optimisation."""
    return len(rec[1]) if rec[0] in ("upsert", "set_payload", "chunk_indexes", "delete") else 1


def _apply(shard: qe.EdgeShard, rec: Record) -> None:
    for op in _record_ops(rec):
        shard.update(op)


def _packed(rec: Record) -> Record:
    """Dense vectors as float32 arrays: a quarter of a pickled list, and what Edge stores."""
    if rec[0] != "upsert":
        return rec
    return ("upsert", [(p, array("f", d), i, v, pl) for p, d, i, v, pl in rec[1]])


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


def _replay(
    shard: qe.EdgeShard, path: Path, offset: int, limit: int | None = None
) -> tuple[int, int]:
    """Applies the log from `offset` (stopping once `limit` points are applied, if given);
    returns (new offset, points touched)."""
    points = 0
    end = offset
    for rec, end in _read_log(path, offset):  # noqa: B007 (the last offset is the result)
        _apply(shard, rec)
        points += _record_points(rec)
        if limit is not None and points >= limit:
            break
    return end, points


def _log_bytes(path: Path, start: int, end: int) -> bytes:
    """The raw records of a log between two offsets."""
    with open(path, "rb") as fh:
        fh.seek(start)
        return fh.read(end - start)


# --- the chunks shard: live dir, spare dir, op log ---------------------------------------


class _Live:
    """The serving shard and how many calls are inside it (it is closed only at zero)."""

    __slots__ = ("shard", "path", "users")

    def __init__(self, shard: qe.EdgeShard, path: Path) -> None:
        self.shard = shard
        self.path = path
        self.users = 0


class ChunkStore:
    """The chunks shard that serves, the spare copy the optimiser rebuilds, and the op log.

    Without `log_writes` this is just the shard. With it, every write is also appended to
    an op log, so the spare (the same data as the live shard at the start of the log) can
    be brought up to date in another process and swapped in.
    """

    def __init__(
        self,
        root: Path,
        collection: str,
        config: qe.EdgeConfig,
        log_writes: bool,
        warm: bool = False,
    ):
        self.root = root
        self.collection = collection
        self.config = config
        self.log_writes = log_writes
        self._state_path = root / f"{collection}.edge-state.json"
        self._cond = threading.Condition()  # guards _live and the users counts
        self._write_lock = threading.Lock()  # one write (apply + log) at a time; swaps wait
        self._log_fh: Any = None
        self.log_path: Path | None = None
        self.pending = 0  # points written since the live shard was last optimised
        self.dirty = 0  # points written since the live shard was last flushed
        self.spare_valid = False
        # True until a swap makes an optimised copy live: the live shard may then hold any
        # number of unoptimised points (an upgrade, a crash, a failed cycle).
        self.live_unoptimised = False
        self.on_write: Callable[[], None] | None = None
        # Writes that reached Edge so far, and those done (guarded by _cond): see reading().
        self._writes_started = 0
        self._writes_done = 0
        self._lock_fd = _lock_collection(root, collection)  # before anything on disk changes
        try:
            self._open(warm)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _open(self, warm: bool) -> None:
        """Opens the live shard; with the op log, resumes a spare closed cleanly."""
        root, collection, log_writes = self.root, self.collection, self.log_writes
        shutil.rmtree(self.next_spare_path, ignore_errors=True)  # a swap cut short
        state = _load_state(self._state_path)
        live_path = _live_dir(root, collection, state)
        if warm:  # memory-mapped segments: read them now, not during the first queries
            _warm(live_path)
        self._live = _Live(_open_shard(live_path, self.config), live_path)
        if log_writes and _needs_rebuild(self._live.shard.info(), _REPLAY_STEP):
            log.warning(
                "edge: the chunks shard in %s holds many points no optimisation has "
                "indexed (filled before the optimiser, or with FRESHRAG_EDGE_OPTIMIZER=off). "
                "The first cycle rebuilds it in the background, and closing it afterwards "
                "pauses queries and writes for about 1 s per million points; to avoid that "
                "pause, stop the service and run `freshrag optimize` first",
                live_path,
            )
        if not log_writes:
            if state:
                self._write_state(spare_valid=False)  # unlogged writes: the spare is stale
            return
        log_path = root / state["log"] if state.get("log") else None
        resumable = (
            state.get("spare_valid")
            and log_path is not None
            and log_path.exists()
            and (self.spare_path / "edge_config.json").exists()
        )
        if resumable:  # closed cleanly: spare + log still equal the live shard
            self.log_path, self.spare_valid = log_path, True
            self._log_fh = open(log_path, "ab")  # noqa: SIM115 (lives as long as the store)
            self.pending = 1 if log_path.stat().st_size else 0
            self._write_state(spare_valid=False)  # a crash from here on loses log records
        self._drop_stale_logs()

    # --- paths and state --------------------------------------------------------------

    @property
    def live_path(self) -> Path:
        return self._live.path

    @property
    def spare_path(self) -> Path:
        return _other_dir(self.root, self.collection, self._live.path)

    @property
    def next_spare_path(self) -> Path:
        """Where the child leaves a copy of its result when that copy, not the old live
        shard, is to become the spare (`spare_from_child`)."""
        return self.root / f"{self.collection}.c"

    def spare_from_child(self) -> bool:
        """Whether the next spare should be a copy of the child's optimised result rather
        than the old live shard: when the live shard was never swapped in (an upgrade, a
        crash, a failed cycle), it may hold any number of unoptimised points, which the
        next cycle would have to index all over again (a whole rebuild, where the copy
        needs only what is new: bench/scale.py's cycle 2)."""
        return self.live_unoptimised

    def _write_state(self, spare_valid: bool, durable: bool = True) -> None:
        """Atomically: which dir is live, the current log, and whether the spare matches it."""
        log_name = self.log_path.name if self.log_path else None
        _save_state(self._state_path, self._live.path.name, log_name, spare_valid, durable)

    def _drop_stale_logs(self) -> None:
        for p in _op_logs(self.root, self.collection):
            if p != self.log_path:
                p.unlink(missing_ok=True)

    def _new_log(self) -> None:
        """Starts an empty op log (the spare equals the live shard at this point).

        The caller drops the old log after letting writes go: unlinking a log of a million
        points takes ext4 about half a second, and writes would wait for it.
        """
        if self._log_fh is not None:
            self._log_fh.close()
        self.log_path = self.root / f"{self.collection}.oplog.{time.time_ns()}"
        self._log_fh = open(self.log_path, "ab")  # noqa: SIM115 (lives as long as the store)

    # --- access -----------------------------------------------------------------------

    @contextmanager
    def use(self) -> Iterator[qe.EdgeShard]:
        """The live shard for one call; a swap closes the old one only after such calls end."""
        with self._cond:
            live = self._live
            live.users += 1
        try:
            yield live.shard
        finally:
            with self._cond:
                live.users -= 1
                if live.users == 0:
                    self._cond.notify_all()

    @contextmanager
    def reading(self) -> Iterator[qe.EdgeShard]:
        """The live shard for a search, entered only after the writes already in Edge.

        Edge starts a search while an update waits for the ones in flight, so back-to-back
        searches can keep a write out: on a never-optimised 1M-point shard (searches of
        55 ms) writes beside a query every 50 ms waited up to 1.3 s, and 24 ms without the
        queries (issue 12's closing note). A search that arrives while a write is in Edge
        lets it finish first, which costs the search that write's time (milliseconds; at most
        `_SEARCH_WAIT_MAX_S`, for a long write such as a payload index build).
        Writes held back by a swap are not in Edge, so searches never wait for a swap.
        """
        with self._cond:
            ticket = self._writes_started
            if self._writes_done < ticket:
                self._cond.wait_for(lambda: self._writes_done >= ticket, _SEARCH_WAIT_MAX_S)
        with self.use() as shard:
            yield shard

    @property
    def shard(self) -> qe.EdgeShard:
        """The live shard (no use count: for callers that own the lifecycle, e.g. a bench)."""
        return self._live.shard

    def write(self, rec: Record) -> None:
        with self._write_lock:
            with self._cond:
                self._writes_started += 1
            try:
                with self.use() as shard:
                    _apply(shard, rec)
            finally:
                with self._cond:
                    self._writes_done += 1
                    self._cond.notify_all()
            if self._log_fh is not None:
                body = pickle.dumps(_packed(rec), protocol=pickle.HIGHEST_PROTOCOL)
                self._log_fh.write(_FRAME.pack(len(body)) + body)
                self._log_fh.flush()  # to the OS, where the child reads it
            n = _record_points(rec)
            self.pending += n
            self.dirty += n
        if self.on_write is not None:
            self.on_write()

    # --- the optimiser's side ---------------------------------------------------------

    def flush(self) -> None:
        """Persists the live shard. Edge never flushes by itself and a flush holds the GIL
        for as long as the unflushed data takes to write (0.25 s for 30k points here), so
        the optimiser flushes every few seconds and a swap's close has little left to do."""
        if self.dirty:
            self.dirty = 0
            with self.use() as shard:
                shard.flush()

    def make_spare(self) -> float:
        """Copies the live shard to the spare with writes held; returns the seconds taken.

        Needed once per fresh start (and after a crash or a failed cycle): afterwards the
        two dirs swap roles and nothing is copied again. Queries keep running meanwhile.
        """
        t0 = time.monotonic()
        with self._write_lock:
            with self.use() as shard:
                shard.flush()
            shutil.rmtree(self.spare_path, ignore_errors=True)
            shutil.copytree(self.live_path, self.spare_path)
            self._new_log()
            self.spare_valid = True
            self.live_unoptimised = True
            self._write_state(spare_valid=False)
        self._drop_stale_logs()
        return time.monotonic() - t0

    def swap(self, offset: int, from_copy: bool = False) -> dict[str, float]:
        """Makes the (optimised, warm) spare live; the old live dir becomes the spare.

        `offset` is how far into the log the spare already is. Returns the pauses: `load_s`
        (the load holds the GIL, so everything waits), `tail_s` (writes wait while the last
        records are replayed) and `close_s` (closing the old shard, GIL again); and what
        nothing waits for: `catch_up_s` (replaying what came meanwhile) and `drop_log_s`.

        With `from_copy`, the child left a copy of the spare as it was at `offset` in
        `next_spare_path`: that copy becomes the spare instead, and the new log starts
        with the records it lacks.
        """
        assert self.log_path is not None
        t0, f0 = time.monotonic(), _major_faults()
        new_path = self.spare_path
        copy_offset = offset
        new = qe.EdgeShard.load(str(new_path), self.config)
        t1, f1 = time.monotonic(), _major_faults()
        swapped = False
        caught_up = 0
        try:
            # Catch up without holding writes (they keep going to the old shard and the
            # log, in order); then only the last few points are replayed with writes held.
            # Down to a few: replaying beside slow searches (a never-optimised live shard)
            # took 3 ms a point. Stop early when writes come faster than the replay.
            previous = None
            for _ in range(20):
                offset, n = _replay(new, self.log_path, offset)
                caught_up += n
                if n < 50 or (previous is not None and n >= previous):
                    break
                previous = n
            t2, f2 = time.monotonic(), _major_faults()
            with self._write_lock:
                offset, tail = _replay(new, self.log_path, offset)
                with self._cond:
                    old = self._live
                    self._live = _Live(new, new_path)
                swapped = True
                old_log = self.log_path
                self._new_log()
                if from_copy:  # the copy lacks what the child did not replay: log it again
                    self._log_fh.write(_log_bytes(old_log, copy_offset, offset))
                    self._log_fh.flush()
                self.pending = self.dirty = tail
                # Otherwise the spare is the old live dir, equal to the new one right now.
                self.spare_valid = not from_copy
                self.live_unoptimised = False
                self._write_state(spare_valid=False, durable=False)  # no disk wait here
        except BaseException:
            if not swapped:
                new.close()
            raise
        t3, f3 = time.monotonic(), _major_faults()
        synced = True
        try:  # writes go on meanwhile; before any dir is replaced below
            sync_file(self._state_path)
        except OSError:  # the swap is done: the old shard must still be closed
            synced = False
            log.exception("edge: syncing %s failed", self._state_path)
        with self._cond:
            idle = self._cond.wait_for(lambda: old.users == 0, timeout=60)
        if idle:
            try:  # without the GIL: the close below then holds it for less
                drop_mapped_pages(old.path)
            except Exception:  # only a shorter pause: never in the way of the close
                log.exception("edge: dropping the old shard's mapped pages failed")
        else:
            log.warning("edge: a call still inside the old shard after 60 s; closing it")
        old.shard.close()
        trim_heap()
        t4, f4 = time.monotonic(), _major_faults()
        if from_copy and synced:
            shutil.rmtree(old.path)
            os.replace(self.next_spare_path, old.path)
            self.spare_valid = True
        elif from_copy:  # the old live dir stays as it was: the next cycle copies anew
            shutil.rmtree(self.next_spare_path, ignore_errors=True)
        self._drop_stale_logs()
        return {
            "load_s": t1 - t0,
            "catch_up_s": t2 - t1,
            "tail_s": t3 - t2,
            "close_s": t4 - t3,
            "drop_log_s": time.monotonic() - t4,
            "catch_up_points": caught_up,
            "tail_points": tail,
            # Pages this thread had to read from disk in each step: a swap that waits on
            # the disk (a page cache too small for the shards) shows here.
            "major_faults": {
                "load": f1 - f0,
                "catch_up": f2 - f1,
                "tail": f3 - f2,
                "close": f4 - f3,
            },
        }

    def close(self) -> None:
        try:
            with self._write_lock:
                self._live.shard.flush()
                self._live.shard.close()
                if self._log_fh is not None:
                    self._log_fh.flush()
                    os.fsync(self._log_fh.fileno())
                    self._log_fh.close()
                    self._log_fh = None
                    self._write_state(spare_valid=self.spare_valid)
        finally:
            os.close(self._lock_fd)
        trim_heap()


class StateUnreadable(RuntimeError):
    """Both shard dirs hold a shard and the file that says which one is live is damaged."""


def _load_state(path: Path) -> dict[str, Any]:
    """The state file; `{}` when there is none, `{"unreadable": why}` when it is damaged
    (a power cut before its write reached the disk)."""
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        return {"unreadable": f"{type(exc).__name__}: {exc}"}
    return state if isinstance(state, dict) else {"unreadable": "not a JSON object"}


def _save_state(
    path: Path, live: str, log_name: str | None, spare_valid: bool, durable: bool = True
) -> None:
    """Atomically: which dir is live, the current log, and whether the spare matches it."""
    state = {"live": live, "log": log_name, "spare_valid": spare_valid}
    replace_atomically(path, json.dumps(state), durable)


def _shard_dirs(root: Path, collection: str) -> tuple[Path, Path]:
    """The two dirs a chunks shard and its spare take turns in: `<c>/` and `<c>.b/`."""
    return root / collection, root / f"{collection}.b"


def _other_dir(root: Path, collection: str, live: Path) -> Path:
    a, b = _shard_dirs(root, collection)
    return b if live == a else a


def _op_logs(root: Path, collection: str) -> list[Path]:
    """Every op log of a collection (`_new_log` names them `<c>.oplog.<ns>`)."""
    return list(root.glob(f"{collection}.oplog.*"))


def _live_dir(root: Path, collection: str, state: dict[str, Any]) -> Path:
    """The live shard's dir: the one the state file names; a state file that outlived its
    shard (a dropped collection) starts over at `<collection>/`. Without a state file,
    `<collection>/` (shards from before it), or `<collection>.b/` when only that holds a
    shard: a state file lost after `upgrade_offline` moved the shard there must not make
    an empty shard beside it."""
    a, b = _shard_dirs(root, collection)
    if state.get("live"):
        named = root / state["live"]
        return named if (named / "edge_config.json").exists() else a
    has_a, has_b = (a / "edge_config.json").exists(), (b / "edge_config.json").exists()
    if "unreadable" in state and has_a and has_b:
        # One of them is the spare, possibly behind: guessing could serve stale chunks.
        when = {
            d: time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(_newest_mtime(d))) for d in (a, b)
        }
        raise StateUnreadable(
            f"{root / f'{collection}.edge-state.json'} is unreadable ({state['unreadable']}) "
            f"and both {a} (last written {when[a]}) and {b} (last written {when[b]}) hold "
            "a shard, so which one is live is unknown. The live one is usually the one "
            "written last: move the other out of the way (or delete it) and start again; "
            "the spare is rebuilt from the live one"
        )
    if not has_a and has_b:
        return b
    return a


def _newest_mtime(path: Path) -> float:
    return max((f.stat().st_mtime for f in path.rglob("*") if f.is_file()), default=0.0)


def _dense_of(point: Any) -> list[float] | None:
    v = point.vector
    v = v.get(DENSE) if isinstance(v, dict) else v
    return list(v) if v is not None else None


def _opened_store(store: ChunkStore | None) -> ChunkStore:
    if store is None:
        raise RuntimeError("index not initialised: call ensure_schema(dim) first")
    return store


# --- the optimiser: a background thread that runs one child process per cycle -----------

_CHILD = "from retrieval.edge import _child_main; _child_main()"
_FLUSH_EVERY_S = 2.0
_SEARCH_WAIT_MAX_S = 0.2  # the longest a search lets writes go first (ChunkStore.reading)
_REPLAY_STEP = 250_000  # points; Edge's default max segment on 2 cores is ~400 MB of vectors
_REINDEX_POINTS = 5_000  # fewer new points than this stay in the appendable segment


class OptimizerStopped(Exception):
    """The index was closed while a cycle ran; the spare is rebuilt on the next start."""


class EdgeOptimizer:
    """Keeps the chunks shard optimised without holding this process's GIL for long.

    A cycle starts after `optimize_after_points` written points, or `optimize_interval_s`
    after the last cycle when anything was written; never two at once. The child loads
    the spare, replays the op log, runs `optimize()` (HNSW on sealed segments, merges,
    vacuum of deleted points), replays what arrived meanwhile, closes the spare and warms
    its files; then `ChunkStore.swap` makes it live here.
    """

    def __init__(self, store: ChunkStore, tuning: EdgeTuning, dense_dim: int) -> None:
        self.store = store
        self.tuning = tuning
        self.dense_dim = dense_dim
        self.cycles = 0
        self.last: dict[str, Any] = {}
        self.last_error: str | None = None
        self._cond = threading.Condition()
        self._stopping = False
        self._requested = 0
        self._finished = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._retry_after = 0.0
        store.on_write = self._poke
        self._thread = threading.Thread(target=self._run, name="edge-optimizer", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._proc is not None

    def _poke(self) -> None:
        if self.store.pending >= self.tuning.optimize_after_points:
            with self._cond:
                self._cond.notify_all()

    def request(self, wait: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """Runs a cycle now (after the one in progress, if any); with `wait`, returns its stats."""
        with self._cond:
            self._requested += 1
            ticket = self._requested
            self._cond.notify_all()
            if wait:
                self._cond.wait_for(
                    lambda: self._finished >= ticket or self._stopping, timeout=timeout
                )
            return dict(self.last)

    def _due(self, last_end: float) -> tuple[bool, float]:
        now = time.monotonic()
        if self._requested > self._finished:
            return True, 0.0
        if now < self._retry_after:
            return False, self._retry_after - now
        pending = self.store.pending
        if pending >= self.tuning.optimize_after_points:
            return True, 0.0
        wait = last_end + self.tuning.optimize_interval_s - now
        return (pending > 0 and wait <= 0), min(max(wait, 0.1), _FLUSH_EVERY_S)

    def _run(self) -> None:
        last_end = time.monotonic()
        while True:
            with self._cond:
                due, wait = self._due(last_end)
                if not due and not self._stopping:
                    self._cond.wait(timeout=wait)
                    due, _ = self._due(last_end)
                if self._stopping:
                    return
                ticket = self._requested
            self._flush()
            if not due:
                continue
            try:
                self.last = self._cycle()
                self.cycles += 1
                self.last_error = None
            except OptimizerStopped:
                return
            except Exception as exc:  # keep serving from the live shard; retry later
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._retry_after = time.monotonic() + self.tuning.optimize_interval_s
                log.exception("edge optimiser cycle failed; the live shard keeps serving")
            finally:
                last_end = time.monotonic()
                with self._cond:
                    self._finished = max(self._finished, ticket)
                    self._cond.notify_all()

    def _cycle(self) -> dict[str, Any]:
        store = self.store
        t0 = time.monotonic()
        copy_s = 0.0
        if not store.spare_valid:
            copy_s = store.make_spare()
        store.spare_valid = False  # the child is about to change it
        from_copy = store.spare_from_child()
        command = {
            "dir": str(store.spare_path),
            "log": str(store.log_path),
            "dim": self.dense_dim,
            "tuning": asdict(self.tuning),
            "copy_to": str(store.next_spare_path) if from_copy else None,
            "step": _REPLAY_STEP,
        }
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
        with self._cond:
            if self._stopping:
                raise OptimizerStopped
            self._proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
        try:
            message: bytes | None = json.dumps(command).encode()
            while True:  # the live shard keeps taking writes: keep flushing it meanwhile
                try:
                    out, _ = self._proc.communicate(message, timeout=_FLUSH_EVERY_S)
                    break
                except subprocess.TimeoutExpired:
                    message = None
                    self._flush()
            code = self._proc.returncode
        finally:
            with self._cond:
                self._proc = None
        if self._stopping:
            raise OptimizerStopped
        lines = out.decode(errors="replace").strip().splitlines()
        reply = json.loads(lines[-1]) if lines else {}
        if code != 0 or not reply.get("ok"):
            raise RuntimeError(f"optimiser child exited {code}: {reply.get('error', out[-500:])}")
        t1 = time.monotonic()
        pauses = store.swap(reply["offset"], from_copy)
        return {
            "copy_s": copy_s,
            "child_s": t1 - t0 - copy_s,
            "total_s": time.monotonic() - t0,
            **{
                k: reply[k]
                for k in (
                    "optimize_s",
                    "warm_s",
                    "replayed_points",
                    "child_peak_rss_mb",
                    "child_rss_anon_mb",
                    "child_copy_s",
                    "rebuilt",
                )
            },
            "spare_from_child": from_copy,
            **pauses,
        }

    def _flush(self) -> None:
        try:
            self.store.flush()
        except Exception:
            log.exception("edge: flushing the chunks shard failed")

    def close(self, timeout: float = 30.0) -> None:
        """Stops the thread; a running child is killed (its spare is then rebuilt on start)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            proc = self._proc
        if proc is not None:
            proc.kill()
        self._thread.join(timeout)


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL if the process that started it dies."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # not Linux: the parent kills the child on close
        pass


def _major_faults() -> int:
    """Page faults this thread has served from disk so far."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_majflt


# Parts of a shard by how much a query or the load needs them in the page cache, least
# first (see `warm_order`). Everything else (HNSW graph, int8 vectors, sparse index, the
# tenant and acl indexes) ranks after these, and what the load reads (measured with
# fincore at 1M points: the WAL, the id trackers, appendable segments whole) last.
_WARM_RANK = (
    ("vector_storage-sparse",),  # sparse vectors are never rescored
    # The top hits' payload; indexes of fields that filters rarely use (the tenant and
    # acl indexes are read by every filter and held in RAM).
    ("payload_storage", "payload_index"),
    ("vector_storage-dense/matrix.dat", "vector_storage-dense/vectors"),  # rescoring
)
_WARM_LAST = ("wal", "id_tracker.mappings", "id_tracker.versions")
# Of a memory limit (cgroup, or the machine), the share one shard's warm-up may read: the
# live shard, the spare and the heap share the rest.
_WARM_SHARE = 0.4


def warm_order(files: list[tuple[str, int]], budget: int | None = None) -> list[str]:
    """Which shard files (relative path, size) `_warm` reads, in order: what queries read
    least first, the HNSW graph, int8 vectors and sparse index after, and what the load
    reads (WAL, id trackers, appendable segments) last.

    Under a memory limit the page cache keeps what was read last, so those are what
    stays: a restarted process under a limit answers its first queries from memory, and a
    swap's load finds the WAL it reads. With `budget` (bytes), only the files that rank
    highest up to that total are read: reading a shard larger than the limit pushes out
    the pages of the live shard that queries are using (a query stalled 0.9 s at 1M
    points under 2.5 GB while the child warmed all 3.8 GB of the spare).
    """

    # The load reads an appendable segment (the points since the last optimisation) whole.
    appendable = {
        name.rsplit("/", 1)[0] + "/"
        for name, _ in files
        if name.rsplit("/", 1)[-1].startswith("mutable_id_tracker")
    }

    def rank(name: str) -> int:
        path = f"/{name}"
        if any(f"/{p}" in path for p in _WARM_LAST) or any(map(name.startswith, appendable)):
            return len(_WARM_RANK) + 1
        if "/payload_index/" in path and any(f"-{f}-" in name for f in _FILTERED_BY_EVERY_QUERY):
            return len(_WARM_RANK)
        for i, parts in enumerate(_WARM_RANK):
            if any(f"/{p}" in path for p in parts):
                return i
        return len(_WARM_RANK)

    ordered = sorted(files, key=lambda f: rank(f[0]))
    if budget is not None:
        keep, total = [], 0
        for name, size in reversed(ordered):
            if total + size > budget:
                break
            keep.append((name, size))
            total += size
        ordered = keep[::-1]
    return [name for name, _ in ordered]


def _warm(path: Path) -> float:
    """Reads the shard's files so the parent's load finds them in the page cache, up to
    `_WARM_SHARE` of the memory limit (see `warm_order`).

    Closing a shard drops its pages from the cache; loading it cold read from disk
    took 2 s for 200k points here, warm 0.1 s, and the load holds the parent's GIL.
    """
    t0 = time.monotonic()
    files = []
    for dirpath, _, names in os.walk(path):
        for name in names:
            full = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):  # blocks in use: Edge preallocates files
                files.append((os.path.relpath(full, path), os.stat(full).st_blocks * 512))
    for name in warm_order(files, int(memory_limit_bytes() * _WARM_SHARE)):
        try:
            with open(os.path.join(path, name), "rb") as fh:
                while fh.read(1 << 22):
                    pass
        except OSError:
            pass
    return time.monotonic() - t0


def _needs_rebuild(info: Any, step: int) -> bool:
    """Whether a shard holds more unindexed points than one step (dense + sparse each count):
    one filled before the optimiser existed, or written with it off."""
    return 2 * info.points_count - info.indexed_vectors_count > step


def _rebuild_into(
    shard: qe.EdgeShard,
    dest: Path,
    config: qe.EdgeConfig,
    step: int,
    progress: Callable[[int], None] | None = None,
) -> float:
    """Copies `shard` into a new shard at `dest`, `step` points at a time, each step
    optimised before the next; returns the time spent optimising. `dest` is closed and
    flushed when this returns; `shard` is left open. `progress` gets the points copied.

    Optimising such a shard in one call indexes its whole appendable segment as one HNSW
    graph, and at 1M points that graph lost filtered recall that segments built a step at
    a time keep (bench/scale.py's recall@10; issue 12's closing note).
    """
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    fresh = qe.EdgeShard.create(str(dest), config)
    try:
        for name, index in shard.info().payload_schema.items():
            params = index.params if index.params is not None else index.data_type
            fresh.update(qe.UpdateOperation.create_field_index(name, params))
        optimize_s = 0.0
        since = copied = 0
        offset = None
        while True:
            page, offset = shard.scroll(
                qe.ScrollRequest(offset=offset, limit=1_000, with_payload=True, with_vector=True)
            )
            if page:
                points = [qe.Point(p.id, p.vector, p.payload) for p in page]
                fresh.update(qe.UpdateOperation.upsert_points(points))
                since += len(page)
                copied += len(page)
            if since >= step or (offset is None and since):
                t0 = time.monotonic()
                fresh.optimize()
                optimize_s += time.monotonic() - t0
                trim_heap()
                since = 0
                if progress is not None:
                    progress(copied)
            if offset is None:
                break
        fresh.flush()
    finally:
        fresh.close()
    return optimize_s


def _rebuild_in_steps(
    shard: qe.EdgeShard, path: Path, config: qe.EdgeConfig, step: int
) -> tuple[qe.EdgeShard, float]:
    """`_rebuild_into` in place: returns the new shard (at `path`) and the optimise time."""
    fresh_path = path.with_name(path.name + ".rebuild")
    optimize_s = _rebuild_into(shard, fresh_path, config, step)
    shard.close()
    shutil.rmtree(path)
    os.replace(fresh_path, path)
    return qe.EdgeShard.load(str(path), config), optimize_s


def upgrade_offline(
    root: Path,
    collection: str,
    tuning: EdgeTuning,
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    step: int | None = None,
) -> dict[str, Any]:
    """Rebuilds, optimised, a chunks shard that holds many points no optimisation has
    indexed, with the service stopped (`freshrag optimize`).

    The service can do it while it serves (its first cycle rebuilds a copy in the child),
    but the shard it then closes holds that unindexed segment in RAM, and freeing it holds
    the GIL: 1.3 s at 1M points (bench/scale.py). Done here, the service never opens it.
    The result becomes the live dir through the state file (so a crash midway leaves the
    old shard live); the old dir is deleted, and the service copies the new one as its
    spare when it starts. `progress(done, total)` gets the points copied so far; `step`
    is the points indexed at a time (and how many unindexed ones make it worth doing).
    """
    step = step or _REPLAY_STEP
    if not root.is_dir():
        return {"points": 0, "rebuilt": False, "optimize_s": 0.0}
    # Held until the old dir is gone: a service starting meanwhile stops at the lock.
    lock = _lock_collection(root, collection)
    try:
        return _upgrade_locked(root, collection, tuning, threads, progress, step)
    finally:
        os.close(lock)


def _upgrade_locked(
    root: Path,
    collection: str,
    tuning: EdgeTuning,
    threads: int | None,
    progress: Callable[[int, int], None] | None,
    step: int,
) -> dict[str, Any]:
    state_path = root / f"{collection}.edge-state.json"
    live = _live_dir(root, collection, _load_state(state_path))
    config_path = live / "edge_config.json"
    if not config_path.exists():
        return {"points": 0, "rebuilt": False, "optimize_s": 0.0}
    try:
        dim = json.loads(config_path.read_text())["vectors"][DENSE]["size"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RuntimeError(f"{config_path} is not a chunks shard's config: {exc}") from exc
    threads = threads or len(os.sched_getaffinity(0))
    config = chunks_config(dim, replace(tuning, optimize_threads=threads))
    try:
        shard = qe.EdgeShard.load(str(live), config)
    except Exception as exc:
        if "WouldBlock" in str(exc):  # Edge's WAL lock
            raise ShardBusy(f"{live} is open in another process") from exc
        raise
    try:
        info = shard.info()
        points = info.points_count
        if not _needs_rebuild(info, step):
            return {"points": points, "rebuilt": False, "optimize_s": 0.0}
        dest = _other_dir(root, collection, live)
        # `dest` may be the spare of a service that ran once: from here on it is no
        # copy of the live shard, whatever happens to this run.
        _save_state(state_path, live.name, None, spare_valid=False)
        if progress is not None:
            progress(0, points)
        report = None if progress is None else (lambda done: progress(done, points))
        optimize_s = _rebuild_into(shard, dest, config, step, report)
        _save_state(state_path, dest.name, None, spare_valid=False)
    finally:
        shard.close()
    shutil.rmtree(live)
    for old_log in _op_logs(root, collection):
        old_log.unlink()
    trim_heap()
    return {"points": points, "rebuilt": True, "optimize_s": optimize_s}


def _child_main() -> None:
    """One optimisation cycle on the spare shard (run as a separate, niced process)."""
    _die_with_parent()
    try:
        cmd = json.loads(sys.stdin.readline())
        tuning = EdgeTuning(**cmd["tuning"])
        os.nice(tuning.optimize_nice)
        spare, log_path = Path(cmd["dir"]), Path(cmd["log"])
        step = int(cmd["step"])  # the parent always sends it (tests make it smaller)
        config = chunks_config(cmd["dim"], tuning)
        shard = qe.EdgeShard.load(str(spare), config)
        optimize_s = 0.0
        rebuilt = _needs_rebuild(shard.info(), step)
        if rebuilt:  # e.g. a shard filled before the optimiser existed
            shard, optimize_s = _rebuild_in_steps(shard, spare, config, step)
        # A big backlog goes in steps, each sealed and indexed before the next: the child
        # never holds more than one step unindexed in RAM, and steps of about a segment's
        # size need no re-merging later.
        offset, replayed = _replay(shard, log_path, 0, limit=step)
        rounds = 0
        while True:
            t0 = time.monotonic()
            shard.optimize()
            optimize_s += time.monotonic() - t0
            rounds += 1
            trim_heap()  # the step's build buffers: free them before the next step
            # What arrived meanwhile: replayed here, so the swap has only a short tail left;
            # indexed too when it is a lot (a backlog step, or writes during a long build).
            offset, n = _replay(shard, log_path, offset, limit=step)
            replayed += n
            if n < _REINDEX_POINTS or (n < step and rounds >= 8):
                break
        rss, anon = rss_mb("VmHWM"), rss_mb("RssAnon")
        shard.flush()
        shard.close()
        t0 = time.monotonic()
        if cmd.get("copy_to"):  # the next spare, instead of the parent's old live copy
            shutil.rmtree(cmd["copy_to"], ignore_errors=True)
            shutil.copytree(spare, cmd["copy_to"])
        reply = {
            "ok": True,
            "offset": offset,
            "replayed_points": replayed,
            "optimize_s": optimize_s,
            "rebuilt": rebuilt,
            "child_copy_s": time.monotonic() - t0,
            "warm_s": _warm(spare),
            "child_peak_rss_mb": rss,  # includes mapped file pages
            "child_rss_anon_mb": anon,
        }
    except Exception as exc:
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write("\n" + json.dumps(reply) + "\n")
    sys.stdout.flush()


# --- the index ---------------------------------------------------------------------------


class EdgeIndex:
    backend = "edge"

    def __init__(
        self, root: Path, collection: str, registry: str, tuning: EdgeTuning | None = None
    ) -> None:
        """`tuning=None` keeps the shard as Edge makes it (no HNSW built, nothing optimised)."""
        self.root = Path(root)
        self.tuning = tuning
        self._collection = collection
        self._registry_path = self.root / registry
        self._answers_path = self.root / f"{collection}_answers"
        self._chunks: ChunkStore | None = None
        self._registry: qe.EdgeShard | None = None
        self._answers: qe.EdgeShard | None = None
        self._metadata_indexed: set[str] | None = None
        self._search_params = search_params(tuning)
        self.optimizer: EdgeOptimizer | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def ensure_schema(self, dense_dim: int) -> None:
        if self._chunks is not None:
            return
        optimise = self.tuning is not None and self.tuning.optimizer == "process"
        self.root.mkdir(parents=True, exist_ok=True)
        on_disk = self.tuning is not None and self.tuning.on_disk
        store = ChunkStore(
            self.root, self._collection, chunks_config(dense_dim, self.tuning), optimise, on_disk
        )
        self._chunks = store
        dense = {DENSE: qe.EdgeVectorParams(size=dense_dim, distance=qe.Distance.Cosine)}
        # The registry needs no vectors; Edge wants at least one declared, so: an unused one.
        reg_config = qe.EdgeConfig(sparse_vectors={"unused": qe.EdgeSparseVectorParams()})
        self._registry = _open_shard(self._registry_path, reg_config)
        self._answers = _open_shard(self._answers_path, qe.EdgeConfig(vectors=dense))
        # Float indexes: expires_at for the purge filter, created_at for order_by in the trim.
        _ensure_payload_indexes(
            self._answers,
            {
                "scope": qe.PayloadSchemaType.Keyword,
                "expires_at": qe.PayloadSchemaType.Float,
                "created_at": qe.PayloadSchemaType.Float,
            },
        )
        wanted = {name: "Keyword" for name in KEYWORD_INDEXES} | {
            name: "Integer" for name in INTEGER_INDEXES
        }
        with store.use() as shard:
            missing = [n for n in wanted if n not in shard.info().payload_schema]
        for name in missing:
            # Edge rebuilds an in-RAM index on every load, and a load holds the GIL, so
            # mapped indexes keep the optimiser's swap short; but mapped tenant and acl
            # indexes, which every query filters on, slowed filtered search (one-off
            # measurements at 300k/500k points in issue 12's closing note), so those two
            # stay in RAM.
            cold = on_disk and name not in _FILTERED_BY_EVERY_QUERY
            store.write(("field_index", name, wanted[name], cold))
        if optimise:
            assert self.tuning is not None
            if not store.spare_valid:
                store.make_spare()  # at startup, before traffic: a one-off copy
            self.optimizer = EdgeOptimizer(store, self.tuning, dense_dim)

    @property
    def chunks(self) -> qe.EdgeShard:
        """The live chunks shard (benchmarks and diagnostics; adapter code uses `_use`)."""
        return _opened_store(self._chunks).shard

    def _use(self) -> Any:
        return _opened_store(self._chunks).use()

    def _write(self, rec: Record) -> None:
        _opened_store(self._chunks).write(rec)

    @property
    def registry(self) -> qe.EdgeShard:
        return _opened(self._registry)

    def optimize(self, wait: bool = True, timeout: float | None = None) -> dict[str, Any]:
        """Runs an optimiser cycle now; returns its timings (`{}` without the optimiser)."""
        return self.optimizer.request(wait, timeout) if self.optimizer else {}

    def ping(self) -> bool:
        try:
            with self._use() as shard:
                shard.info()
            return True
        except Exception:
            return False

    def close(self) -> None:
        if self.optimizer is not None:
            self.optimizer.close()
            self.optimizer = None
        if self._chunks is not None:
            self._chunks.close()
        for shard in (self._registry, self._answers):
            if shard is not None:
                shard.flush()
                shard.close()
        self._chunks = None
        self._registry = self._answers = None

    def drop(self) -> None:
        self.close()
        c = self._collection
        for path in [*_shard_dirs(self.root, c), self._registry_path, self._answers_path]:
            shutil.rmtree(path, ignore_errors=True)
        for path in [self.root / f"{c}.edge-state.json", *_op_logs(self.root, c)]:
            path.unlink(missing_ok=True)

    # --- chunks ------------------------------------------------------------------------

    def _scroll(
        self,
        conditions: list[Condition],
        with_vector: bool,
        fields: tuple[str, ...] | None = ("hash", "chunk_index"),
    ) -> list[qe.Record]:
        """Every point matching; `fields=None` brings the whole payload."""
        records: list[qe.Record] = []
        offset = None
        while True:
            with self._use() as shard:
                page, offset = shard.scroll(
                    qe.ScrollRequest(
                        offset=offset,
                        limit=_PAGE,
                        filter=to_edge_filter(conditions),
                        with_payload=True if fields is None else list(fields),
                        with_vector=[DENSE] if with_vector else False,
                    )
                )
            records.extend(page)
            if offset is None:
                return records

    def chunks_of(self, tenant: str, doc_id: str) -> list[StoredChunk]:
        recs = self._scroll([Match("tenant", tenant), Match("doc_id", doc_id)], False)
        return [
            StoredChunk(
                str(r.id), (r.payload or {}).get("hash", ""), (r.payload or {}).get("chunk_index")
            )
            for r in recs
        ]

    def chunks_of_many(self, keys: list[DocKey]) -> dict[DocKey, list[StoredChunk]]:
        if not keys:
            return {}
        fields = ("hash", "chunk_index", "tenant", "doc_id")
        records = self._scroll(documents_filter(keys), False, fields)
        return stored_chunks(
            group_by_document(keys, [(str(r.id), r.payload or {}) for r in records])
        )

    def vectors_by_hash(self, hashes: list[str]) -> dict[str, list[float]]:
        if not hashes:
            return {}
        out: dict[str, list[float]] = {}
        for r in self._scroll([MatchAny("hash", tuple(hashes))], True):
            vec = r.vector
            if isinstance(vec, dict) and DENSE in vec:
                out[(r.payload or {})["hash"]] = list(vec[DENSE])
        return out

    def upsert_chunks(self, points: list[ChunkPoint]) -> None:
        if not points:
            return
        self._index_metadata(points)
        self._write(
            (
                "upsert",
                [(p.id, p.dense, p.sparse.indices, p.sparse.values, p.payload) for p in points],
            )
        )

    def _index_metadata(self, points: list[ChunkPoint]) -> None:
        """A payload index for each metadata key in use, so filters on it never scan."""
        if self._metadata_indexed is None:  # read once; this process is the shard's writer
            with self._use() as shard:
                schema = shard.info().payload_schema
            self._metadata_indexed = {k for k in schema if k.startswith("metadata.")}
        for name, kind in metadata_indexes(points, self._metadata_indexed).items():
            # Logged like any write, so the optimiser's spare gets the same index.
            on_disk = self.tuning is not None and self.tuning.on_disk
            self._write(("field_index", name, _EDGE_KINDS[kind], on_disk))
            self._metadata_indexed.add(name)

    def set_payload(self, point_ids: list[str], payload: dict[str, Any]) -> None:
        if point_ids:
            self._write(("set_payload", list(point_ids), payload))

    def set_document_payload(self, tenant: str, doc_id: str, payload: dict[str, Any]) -> None:
        self._write(
            ("set_payload_where", [Match("tenant", tenant), Match("doc_id", doc_id)], payload)
        )

    def set_chunk_indexes(self, indexes: dict[str, int]) -> None:
        if indexes:
            self._write(("chunk_indexes", dict(indexes)))

    def delete_chunks(self, point_ids: list[str]) -> None:
        if point_ids:
            self._write(("delete", list(point_ids)))

    def delete_document_chunks(self, tenant: str, doc_id: str) -> None:
        self._write(("delete_where", [Match("tenant", tenant), Match("doc_id", doc_id)]))

    def count_chunks(self, conditions: list[Condition]) -> int:
        with self._use() as shard:
            return shard.count(qe.CountRequest(filter=to_edge_filter(conditions), exact=True))

    # --- answer cache ------------------------------------------------------------------

    @property
    def answers(self) -> qe.EdgeShard:
        return _opened(self._answers)

    def cache_search(
        self, vector: list[float], scope: str, now: float, threshold: float
    ) -> SearchHit | None:
        flt = to_edge_filter([Match("scope", scope), Range("expires_at", gt=now)])
        found = self.answers.query(
            qe.QueryRequest(
                limit=1,
                query=qe.Query.Nearest(vector, using=DENSE),
                filter=flt,
                score_threshold=threshold,
                with_payload=True,
            )
        )
        return (
            SearchHit(str(found[0].id), float(found[0].score), found[0].payload or {})
            if found
            else None
        )

    def cache_put(self, point_id: str, vector: list[float], payload: dict[str, Any]) -> None:
        self.answers.update(
            qe.UpdateOperation.upsert_points([qe.Point(point_id, {DENSE: vector}, payload)])
        )

    def cache_delete(self, point_ids: list[str]) -> None:
        if point_ids:
            self.answers.update(qe.UpdateOperation.delete_points(point_ids))

    def cache_purge_expired(self, now: float) -> int:
        flt = to_edge_filter([Range("expires_at", lte=now)])
        expired = self.answers.count(qe.CountRequest(filter=flt, exact=True))
        if expired:
            self.answers.update(qe.UpdateOperation.delete_points_by_filter(flt))
        return expired

    def cache_count(self) -> int:
        return self.answers.count(qe.CountRequest(exact=True))

    def cache_trim(self, max_entries: int) -> int:
        excess = self.cache_count() - max_entries
        dropped = 0
        while dropped < excess:
            # Oldest first; each page is deleted before the next scroll, so no offset needed.
            page, _ = self.answers.scroll(
                qe.ScrollRequest(
                    limit=min(_PAGE, excess - dropped),
                    order_by=qe.OrderBy("created_at", direction=qe.Direction.Asc),
                    with_payload=False,
                    with_vector=False,
                )
            )
            if not page:
                break
            self.cache_delete([str(r.id) for r in page])
            dropped += len(page)
        return dropped

    # --- registry ----------------------------------------------------------------------

    def get_document(self, tenant: str, doc_id: str) -> DocumentState | None:
        recs = self.registry.retrieve([document_point_id(tenant, doc_id)], True, False)
        return DocumentState.from_payload(recs[0].payload) if recs and recs[0].payload else None

    def count_documents(self) -> int:
        """Documents indexed and not deleted (the registry, tombstones left out)."""
        # A scroll, not a filtered count: Edge 0.9 does not match booleans in filters.
        live, offset = 0, None
        while True:
            page, offset = self.registry.scroll(
                qe.ScrollRequest(offset=offset, limit=_PAGE, with_payload=["deleted"])
            )
            live += sum(1 for r in page if not (r.payload or {}).get("deleted"))
            if offset is None:
                return live

    def documents(self) -> Iterator[DocumentState]:
        offset = None
        while True:
            page, offset = self.registry.scroll(
                qe.ScrollRequest(offset=offset, limit=_PAGE, with_payload=True)
            )
            yield from (DocumentState.from_payload(r.payload) for r in page if r.payload)
            if offset is None:
                return

    def chunk_payloads(self, keys: list[DocKey]) -> dict[DocKey, list[tuple[str, dict[str, Any]]]]:
        if not keys:
            return {}
        records = self._scroll(documents_filter(keys), False, None)
        return group_by_document(keys, [(str(r.id), r.payload or {}) for r in records])

    def get_documents(self, keys: list[DocKey]) -> dict[DocKey, DocumentState]:
        if not keys:
            return {}
        recs = self.registry.retrieve([document_point_id(t, d) for t, d in keys], True, False)
        states = [DocumentState.from_payload(r.payload) for r in recs if r.payload]
        return {(s.tenant, s.doc_id): s for s in states}

    def put_document(self, state: DocumentState) -> None:
        point = qe.Point(document_point_id(state.tenant, state.doc_id), {}, state.to_payload())
        self.registry.update(qe.UpdateOperation.upsert_points([point]))

    # --- search ------------------------------------------------------------------------

    def search(
        self,
        mode: SearchMode,
        dense: list[float] | None,
        sparse: SparseVec | None,
        conditions: list[Condition],
        limit: int,
        fusion: Fusion = Fusion(),
        with_dense: bool = False,
    ) -> list[SearchHit]:
        flt = to_edge_filter(conditions)
        params = self._search_params
        vectors = [DENSE] if with_dense else False
        if mode == "dense":
            req = qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(dense, using=DENSE),
                filter=flt,
                with_payload=True,
                with_vector=vectors,
                params=params,
            )
        elif mode == "sparse":
            req = qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(_sparse(sparse), using=SPARSE),
                filter=flt,
                with_payload=True,
                with_vector=vectors,
            )
        else:
            n = prefetch_limit(limit)
            req = qe.QueryRequest(
                limit=limit,
                prefetches=[
                    qe.Prefetch(
                        limit=n,
                        query=qe.Query.Nearest(dense, using=DENSE),
                        filter=flt,
                        params=params,
                    ),
                    qe.Prefetch(
                        limit=n, query=qe.Query.Nearest(_sparse(sparse), using=SPARSE), filter=flt
                    ),
                ],
                query=qe.Fusion.Rrf(
                    k=fusion.k, weights=[fusion.dense_weight, fusion.sparse_weight]
                ),
                filter=flt,
                with_payload=True,
                with_vector=vectors,
            )
        with _opened_store(self._chunks).reading() as shard:
            found = shard.query(req)
        return [
            SearchHit(
                str(p.id), float(p.score), p.payload or {}, _dense_of(p) if with_dense else None
            )
            for p in found
        ]
