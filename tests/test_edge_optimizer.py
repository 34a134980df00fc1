"""The Edge optimiser against real Qdrant Edge shards and real child processes.

Vectors are random (768-d, so a few thousand points pass Edge's 10 MB indexing threshold
and get an HNSW graph); a query with a point's own vector must find that point first.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest
import qdrant_edge as qe
from click.testing import CliRunner

from freshrag.cli import cli
from freshrag.settings import Settings
from retrieval.encoders import SparseVec
from retrieval.store.edge import layout, rebuild, shards
from retrieval.store.edge.adapter import EdgeIndex
from retrieval.store.edge.lock import ShardBusy
from retrieval.store.edge.tuning import EdgeTuning
from retrieval.store.edge.upgrade import upgrade_offline
from retrieval.store.edge.warming import warm_order
from retrieval.store.types import ChunkPoint, Match, MatchAny
from tests.conftest import Loops, wait_for

pytestmark = pytest.mark.unit

DIM = 768
N = 4000
# Manual cycles only (no threshold/interval trigger), unless a test says otherwise.
MANUAL = EdgeTuning(optimize_after_points=10**9, optimize_interval_s=3600)


def vector(i: int) -> list[float]:
    rnd = random.Random(i)
    v = [rnd.gauss(0, 1) for _ in range(DIM)]
    norm = sum(x * x for x in v) ** 0.5
    return [x / norm for x in v]


def pid(i: int) -> str:
    return str(uuid.UUID(int=i + 1))


def points(start: int, n: int) -> list[ChunkPoint]:
    return [
        ChunkPoint(
            pid(i),
            vector(i),
            SparseVec([i % 97, 100 + i % 89], [1.0, 1.0]),
            {
                "tenant": f"t{i % 2}",
                "acl": ["eng"],
                "doc_id": f"d{i // 10}",
                "hash": f"h{i}",
                "chunk_index": i % 10,
                "version": 1,
                "text": f"chunk {i}",
            },
        )
        for i in range(start, start + n)
    ]


def load(index: EdgeIndex, start: int, n: int, batch: int = 500) -> None:
    for s in range(start, start + n, batch):
        index.upsert_chunks(points(s, min(batch, start + n - s)))


def top_hit(index: EdgeIndex, i: int, mode: str = "dense") -> str | None:
    cond = [Match("tenant", f"t{i % 2}"), MatchAny("acl", ("eng",))]
    sparse = SparseVec([i % 97, 100 + i % 89], [1.0, 1.0])
    hits = index.search(mode, vector(i), sparse, cond, 10)
    return hits[0].id if hits else None


def open_index(root: Path, tuning: EdgeTuning | None = MANUAL) -> EdgeIndex:
    index = EdgeIndex(root, "chunks", "documents", tuning=tuning)
    index.ensure_schema(DIM)
    return index


def dense_indexed(index: EdgeIndex) -> int:
    """Vectors in HNSW/sparse indexes of sealed segments (dense + sparse per point)."""
    return index.chunks.info().indexed_vectors_count


class Prober(Loops):
    """Queries and writes from two threads while a cycle runs; records the longest waits."""

    def __init__(self, index: EdgeIndex, first_new: int, known: int = N) -> None:
        self.index = index
        self.known = known  # ids below this are in the index when the probe starts
        self.next_id = first_new
        self.errors: list[BaseException] = []
        self.wrong = 0
        self.queries = 0
        self.max_query_s = 0.0
        self.max_write_s = 0.0
        super().__init__(self._query, self._write, join_s=30)

    def _query(self) -> None:
        i = 0
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                if top_hit(self.index, i % self.known) != pid(i % self.known):
                    self.wrong += 1
            except BaseException as exc:  # noqa: BLE001 (reported by the test)
                self.errors.append(exc)
                return
            self.max_query_s = max(self.max_query_s, time.monotonic() - t0)
            self.queries += 1
            i += 37

    def _write(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.index.upsert_chunks(points(self.next_id, 5))
            except BaseException as exc:  # noqa: BLE001
                self.errors.append(exc)
                return
            self.max_write_s = max(self.max_write_s, time.monotonic() - t0)
            self.next_id += 5
            time.sleep(0.02)


def test_cycle_after_enough_writes_while_queries_and_writes_go_on(tmp_path: Path) -> None:
    index = open_index(tmp_path, EdgeTuning(optimize_after_points=N, optimize_interval_s=3600))
    try:
        load(index, 0, N - 100)
        time.sleep(0.5)
        assert index.optimizer is not None and index.optimizer.cycles == 0  # below threshold
        first_live = index._chunks.live_path
        before = dense_indexed(index)
        assert before < 2 * N  # nothing sealed and indexed yet
        with Prober(index, N, known=N - 100) as probe:
            load(index, N - 100, 100)  # reaches the threshold: the cycle starts by itself
            wait_for(lambda: index.optimizer.cycles >= 1, timeout=180)
        assert index.optimizer.last_error is None
        assert not probe.errors and probe.wrong == 0 and probe.queries > 0
        assert probe.max_query_s < 5 and probe.max_write_s < 5  # coarse: no long stall
        assert index._chunks.live_path != first_live
        assert dense_indexed(index) >= 2 * N  # HNSW + sparse index over the loaded points
        written = probe.next_id  # every write made during the cycle survived the swap
        assert index.count_chunks([]) == written
        for i in (0, 1, 1234, N - 1, written - 1):
            assert top_hit(index, i) == pid(i)
            assert top_hit(index, i, "hybrid") == pid(i)
        stats = index.optimizer.last
        assert stats["optimize_s"] > 0 and stats["replayed_points"] >= N
    finally:
        index.close()


def test_deleted_points_are_vacuumed(tmp_path: Path) -> None:
    index = open_index(tmp_path)
    try:
        load(index, 0, N)
        index.optimize()  # cycle 1: the live shard is now optimised
        assert index.optimizer.last_error is None
        deleted = [pid(i) for i in range(0, N, 5)] + [pid(i) for i in range(1, N, 5)]
        index.delete_chunks(deleted)
        index.delete_document_chunks("t0", "d2")  # by filter: chunks 20, 22, 24, 26, 28
        remaining = N - len(deleted) - 3
        assert index.count_chunks([]) == remaining
        # Cycle 2 rebuilds the other copy; cycle 3 the one that was live during the
        # deletes: its sealed segment is 40 % deleted, so Edge's vacuum rewrites it.
        index.optimize()
        index.optimize()
        assert index.optimizer.last_error is None and index.optimizer.cycles == 3
        assert index.count_chunks([]) == remaining
        assert dense_indexed(index) == 2 * remaining  # no deleted vectors left in the indexes
        gone = set(deleted)
        for i in range(0, 60):
            hit = top_hit(index, i)
            assert hit not in gone
            if pid(i) not in gone and i not in (22, 24, 26, 28):
                assert hit == pid(i)
    finally:
        index.close()


def test_close_while_optimising_then_reopen(tmp_path: Path) -> None:
    index = open_index(tmp_path)
    load(index, 0, N)
    index.optimize(wait=False)
    wait_for(lambda: index.optimizer.running, timeout=30, interval=0.01)
    t0 = time.monotonic()
    index.close()
    assert time.monotonic() - t0 < 30
    state = json.loads((tmp_path / "chunks.edge-state.json").read_text())
    assert state["spare_valid"] is False  # the child was stopped half-way

    index = open_index(tmp_path)  # rebuilds the spare from the live shard, then serves
    try:
        assert index.count_chunks([]) == N
        assert top_hit(index, 7) == pid(7)
        index.optimize()
        assert index.optimizer.last_error is None
        assert index.count_chunks([]) == N and top_hit(index, 7) == pid(7)
    finally:
        index.close()


def test_existing_shards_keep_loading_and_restarts_copy_nothing(tmp_path: Path) -> None:
    legacy = open_index(tmp_path, tuning=None)  # a shard made before the optimiser existed
    load(legacy, 0, 1000)
    legacy.close()

    index = open_index(tmp_path)
    assert index.count_chunks([]) == 1000 and top_hit(index, 3) == pid(3)
    load(index, 1000, 500)
    index.optimize()
    assert index.optimizer.last_error is None
    load(index, 1500, 10)
    index.close()

    state = json.loads((tmp_path / "chunks.edge-state.json").read_text())
    assert state["live"] == "chunks.b" and state["spare_valid"] is True

    index = open_index(tmp_path)  # clean restart: the spare and its log are reused
    try:
        assert index._chunks.spare_valid and index._chunks.pending > 0
        assert index.count_chunks([]) == 1510 and top_hit(index, 1505) == pid(1505)
        index.optimize()  # the spare gets the 10 logged points
        assert index.optimizer.last_error is None
        assert index.count_chunks([]) == 1510 and top_hit(index, 1505) == pid(1505)
    finally:
        index.close()

    plain = open_index(tmp_path, tuning=None)  # optimiser off: still the right directory
    try:
        assert plain.count_chunks([]) == 1510 and top_hit(plain, 1505) == pid(1505)
    finally:
        plain.close()


def test_settings_reach_the_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHRAG_EDGE_HNSW_M", "8")
    monkeypatch.setenv("FRESHRAG_EDGE_SEARCH_EF", "77")
    settings = Settings(
        data_dir=tmp_path, edge_hnsw_ef_construct=50, edge_optimize_threads=2, edge_on_disk=True
    )
    tuning = EdgeTuning.from_settings(settings)
    assert (tuning.hnsw_m, tuning.search_ef, tuning.quantization) == (8, 77, "int8")
    index = open_index(tmp_path, tuning)
    try:
        config = json.loads((index._chunks.live_path / "edge_config.json").read_text())
        assert config["hnsw_config"]["m"] == 8
        assert config["hnsw_config"]["ef_construct"] == 50
        assert config["hnsw_config"]["max_indexing_threads"] == 2
        assert config["quantization_config"]["scalar"]["type"] == "int8"
        assert config["vectors"]["dense"]["memory"] == "cold"
        assert config["payload_memory"] == "cold"
        # Mapped, not copied into RAM by every load: a swap's load holds the GIL.
        assert config["hnsw_config"]["memory"] == "cold"
        assert config["quantization_config"]["scalar"]["memory"] == "cold"
        assert config["sparse_vectors"]["sparse"]["memory"] == "cold"
        schema = index.chunks.info().payload_schema
        assert schema["hash"].params.memory == qe.Memory.Cold  # mapped: a swap's load is short
        assert schema["doc_id"].params.memory == qe.Memory.Cold
        assert schema["tenant"].params is None  # filtered on by every query: in RAM
        params = index._search_params
        assert params is not None and params.hnsw_ef == 77
        assert params.quantization.rescore is True
        assert params.quantization.oversampling == 2.0
        load(index, 0, 200)
        index.optimize()  # the child builds under the same config
        assert index.optimizer.last_error is None
        config = json.loads((index._chunks.live_path / "edge_config.json").read_text())
        assert config["hnsw_config"]["m"] == 8
        assert top_hit(index, 5) == pid(5)
    finally:
        index.close()


def test_metadata_indexes_reach_the_swapped_in_copy(tmp_path: Path) -> None:
    """An index made for a new metadata key is logged like a write, so the copy the
    optimiser builds has it too and filters on that key keep using an index after a swap."""
    index = open_index(tmp_path)
    try:
        load(index, 0, 200)
        tagged = points(200, 3)
        for p in tagged:
            p.payload["metadata"] = {"team": "search"}
        index.upsert_chunks(tagged)
        first_live = index._chunks.live_path
        index.optimize()
        assert index.optimizer.last_error is None
        assert index._chunks.live_path != first_live
        assert "metadata.team" in index.chunks.info().payload_schema
        assert index.count_chunks([Match("metadata.team", "search")]) == 3
    finally:
        index.close()


def test_an_upgraded_shard_is_rebuilt_in_steps_and_the_childs_copy_becomes_the_spare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shard filled without the optimiser (an upgrade) is rebuilt a step at a time in the
    child; a copy of the child's result, not the unoptimised old live shard, becomes the
    spare, so the next cycle starts from an optimised copy, and no write is lost."""
    monkeypatch.setattr(rebuild, "REPLAY_STEP", 1_000)  # N unindexed points: 4 steps
    legacy = open_index(tmp_path, tuning=None)
    load(legacy, 0, N)
    legacy.close()

    index = open_index(tmp_path)
    try:
        assert index._chunks.spare_from_child()  # its contents were never optimised here
        first_live = index._chunks.live_path
        with Prober(index, N) as probe:
            index.optimize()
        stats = index.optimizer.last
        assert index.optimizer.last_error is None
        assert stats["spare_from_child"] is True and stats["rebuilt"] is True
        assert not probe.errors and probe.wrong == 0 and probe.queries > 0
        assert not index._chunks.next_spare_path.exists()  # moved into the spare's place
        assert index._chunks.spare_path == first_live and index._chunks.spare_valid
        assert not index._chunks.spare_from_child()  # the live copy now came from a swap
        written = probe.next_id
        assert index.count_chunks([]) == written

        load(index, written, 300)
        index.optimize()  # built on the child's copy plus the records it lacked
        stats = index.optimizer.last
        assert index.optimizer.last_error is None
        assert stats["spare_from_child"] is False and stats["rebuilt"] is False
        assert index.count_chunks([]) == written + 300
        assert dense_indexed(index) >= 2 * N
        for i in (0, N - 1, written - 1, written + 299):
            assert top_hit(index, i) == pid(i)
            assert top_hit(index, i, "hybrid") == pid(i)
    finally:
        index.close()

    index = open_index(tmp_path)  # a clean restart reuses that spare and its log
    try:
        assert index._chunks.spare_valid and index.count_chunks([]) == written + 300
    finally:
        index.close()


def test_freshrag_optimize_rebuilds_an_upgraded_shard_before_the_service_opens_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`freshrag optimize`, with the service stopped, rebuilds a shard filled without the
    optimiser, so the service never holds (and frees) its unindexed segment; it refuses
    while the shard is open, and leaves an optimised shard alone."""
    monkeypatch.setattr(rebuild, "REPLAY_STEP", 1_000)  # N unindexed points: 4 steps
    root = tmp_path / "edge"
    collection = Settings().collection
    env = {"FRESHRAG_DATA_DIR": str(tmp_path), "FRESHRAG_EDGE_OPTIMIZE_AFTER_POINTS": "1000000"}

    def open_service() -> EdgeIndex:
        index = EdgeIndex(root, collection, "documents", tuning=MANUAL)
        index.ensure_schema(DIM)
        return index

    legacy = EdgeIndex(root, collection, "documents", tuning=None)
    legacy.ensure_schema(DIM)
    load(legacy, 0, N)
    legacy.close()
    with caplog.at_level("WARNING", logger="retrieval.edge"):
        index = open_service()  # the new version started once: it says what to do
    assert "freshrag optimize" in caplog.text
    try:
        r = CliRunner().invoke(cli, ["optimize"], env=env)
        assert r.exit_code == 1 and "stop the service" in r.output, r.output
    finally:
        index.close()

    r = CliRunner().invoke(cli, ["optimize", "--threads", "2"], env=env)
    assert r.exit_code == 0, r.output
    assert f"{collection}: {N:,} points indexed" in r.output
    state = json.loads((root / f"{collection}.edge-state.json").read_text())
    assert state == {"live": f"{collection}.b", "log": None, "spare_valid": False}
    assert not (root / collection).exists() and not list(root.glob("*.oplog.*"))

    caplog.clear()
    with caplog.at_level("WARNING", logger="retrieval.edge"):
        index = open_service()
    try:
        assert "freshrag optimize" not in caplog.text
        assert index.count_chunks([]) == N and dense_indexed(index) >= 2 * N - 1_000
        for i in (0, 1234, N - 1):
            assert top_hit(index, i) == pid(i) and top_hit(index, i, "hybrid") == pid(i)
        load(index, N, 300)
        index.optimize()
        stats = index.optimizer.last
        assert index.optimizer.last_error is None and stats["rebuilt"] is False
        assert index.count_chunks([]) == N + 300 and top_hit(index, N + 299) == pid(N + 299)
    finally:
        index.close()

    r = CliRunner().invoke(cli, ["optimize"], env=env)
    assert r.exit_code == 0 and f"{N + 300:,} points, nothing to do" in r.output, r.output


def test_freshrag_optimize_rebuilds_every_live_generation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a blue/green reindex both generations' shards are live: both are rebuilt."""
    from freshrag.generations.pointer import (
        Generations,
        first_generation,
        new_generation,
        open_pointer,
    )

    monkeypatch.setattr(rebuild, "REPLAY_STEP", 1_000)
    settings = Settings(data_dir=tmp_path)
    g1 = first_generation(settings)
    g2 = new_generation(settings, Generations(g1), "another-model")
    open_pointer(settings).save(Generations(g1).with_standby(g2))
    for n, gen in enumerate((g1, g2)):
        legacy = EdgeIndex(tmp_path / "edge", gen.collection, gen.registry, tuning=None)
        legacy.ensure_schema(DIM)
        load(legacy, n * 5000, N)
        legacy.close()

    r = CliRunner().invoke(cli, ["optimize"], env={"FRESHRAG_DATA_DIR": str(tmp_path)})
    assert r.exit_code == 0, r.output
    for n, gen in enumerate((g1, g2)):
        assert f"{gen.collection}: {N:,} points indexed" in r.output
        index = EdgeIndex(tmp_path / "edge", gen.collection, gen.registry, tuning=MANUAL)
        index.ensure_schema(DIM)
        try:
            assert index.count_chunks([]) == N and dense_indexed(index) >= 2 * N - 1_000
            assert top_hit(index, n * 5000 + 7) == pid(n * 5000 + 7)
        finally:
            index.close()


def test_an_interrupted_offline_rebuild_leaves_the_old_shard_live_and_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cut short (Ctrl-C, a full disk) after the service ran once, the rebuild has
    overwritten that run's spare: the service must not trust it as a copy of the live
    shard, or its first swap would serve the few points copied so far."""
    monkeypatch.setattr(rebuild, "REPLAY_STEP", 1_000)
    legacy = open_index(tmp_path, tuning=None)
    load(legacy, 0, N)
    legacy.close()
    open_index(tmp_path).close()  # the new version ran once: a spare and its log, valid
    state = json.loads((tmp_path / "chunks.edge-state.json").read_text())
    assert state["spare_valid"] is True and state["live"] == "chunks"

    def interrupt(done: int, total: int) -> None:
        if done:  # after the first step is in the spare's dir
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        upgrade_offline(tmp_path, "chunks", MANUAL, progress=interrupt)
    index = open_index(tmp_path)
    try:
        assert index._chunks.live_path.name == "chunks"
        assert index.count_chunks([]) == N
        for _ in range(2):  # the first swap, then one from the other copy
            index.optimize()
            assert index.optimizer.last_error is None
            assert index.count_chunks([]) == N and top_hit(index, N - 1) == pid(N - 1)
    finally:
        index.close()


def test_the_live_dir_is_found_when_the_state_file_is_lost_or_stale(tmp_path: Path) -> None:
    def shard(name: str) -> None:
        (tmp_path / name).mkdir()
        (tmp_path / name / "edge_config.json").write_text("{}")

    assert layout.live_dir(tmp_path, "c", {}) == tmp_path / "c"  # nothing yet: a new shard
    shard("c.b")  # only the .b dir holds one (the state lost after `freshrag optimize`)
    assert layout.live_dir(tmp_path, "c", {}) == tmp_path / "c.b"
    # A state naming a dir that is gone (a dropped collection) starts over, as before.
    assert layout.live_dir(tmp_path, "c", {"live": "c"}) == tmp_path / "c"
    shard("c")
    assert layout.live_dir(tmp_path, "c", {"live": "c.b"}) == tmp_path / "c.b"
    assert layout.live_dir(tmp_path, "c", {}) == tmp_path / "c"  # a shard from before state
    assert layout.live_dir(tmp_path, "c", {"live": "c.gone"}) == tmp_path / "c"


def test_a_damaged_state_file_with_two_shards_refuses_to_guess(tmp_path: Path) -> None:
    """A power cut can leave the state file empty; with a shard in both dirs one of them is
    a spare that may be behind, so opening must stop and say what to do, not pick `<c>/`."""
    index = open_index(tmp_path)
    index.upsert_chunks(points(0, 10))
    index.optimize()  # now the spare exists beside the live shard
    index.close()
    state = tmp_path / "chunks.edge-state.json"
    live = layout.load_state(state)["live"]
    assert (tmp_path / "chunks" / "edge_config.json").exists()
    assert (tmp_path / "chunks.b" / "edge_config.json").exists()
    state.write_text("")  # the rename reached the disk, the data did not
    assert "unreadable" in layout.load_state(state)
    with pytest.raises(
        layout.StateUnreadable, match=r"unreadable.*chunks.*chunks\.b.*move the other"
    ):
        open_index(tmp_path)
    # The operator moves the spare aside: the live shard opens with every point.
    other = "chunks" if live == "chunks.b" else "chunks.b"
    shutil.move(tmp_path / other, tmp_path / "spare-aside")
    index = open_index(tmp_path)
    try:
        assert index.count_chunks([]) == 10
    finally:
        index.close()
    assert layout.load_state(tmp_path / "missing.json") == {}
    (tmp_path / "list.json").write_text("[1]")
    assert "unreadable" in layout.load_state(tmp_path / "list.json")


def test_a_search_lets_a_write_already_in_edge_go_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back-to-back searches kept writes waiting over a second on a never-optimised 1M
    shard: a search that arrives while a write is inside Edge waits for that write, and
    a write held back by a swap (not yet in Edge) holds up no search."""
    # Long enough that a search wrongly waiting for the held-back write below would
    # outlast the check, short of the test's timeout.
    monkeypatch.setattr(shards, "_SEARCH_WAIT_MAX_S", 30.0)
    index = open_index(tmp_path)
    try:
        load(index, 0, 100)
        inside, release = threading.Event(), threading.Event()
        real_apply = shards.apply

        def held_apply(shard: qe.EdgeShard, rec: tuple) -> None:
            inside.set()
            release.wait(10)
            real_apply(shard, rec)

        monkeypatch.setattr(shards, "apply", held_apply)
        writer = threading.Thread(target=index.upsert_chunks, args=(points(100, 1),))
        writer.start()
        assert inside.wait(10)
        found: list[str | None] = []
        searcher = threading.Thread(target=lambda: found.append(top_hit(index, 100)))
        searcher.start()
        searcher.join(0.3)
        assert searcher.is_alive() and not found  # waits for the write inside Edge
        release.set()
        writer.join(10)
        searcher.join(10)
        assert found == [pid(100)]  # and then sees it

        monkeypatch.setattr(shards, "apply", real_apply)
        with index._chunks._write_lock:  # what a swap holds while it replays the tail
            blocked = threading.Thread(target=index.upsert_chunks, args=(points(101, 1),))
            blocked.start()
            started = time.monotonic()
            assert top_hit(index, 5) == pid(5)
            assert time.monotonic() - started < 5
            assert blocked.is_alive()
        blocked.join(10)
        assert top_hit(index, 101) == pid(101)
    finally:
        index.close()


SEGMENT = "segments/e18f"
SHARD_FILES = [  # (path, MB): a 1M-point shard's parts, sizes rounded
    (f"{SEGMENT}/vector_index-dense/links_compressed.bin", 62),
    (f"{SEGMENT}/vector_storage-dense/quantized.data", 370),
    ("wal/closed-729", 96),
    (f"{SEGMENT}/vector_index-sparse/inverted_index.dat", 240),
    (f"{SEGMENT}/payload_storage/page_0.dat", 600),
    (f"{SEGMENT}/vector_storage-dense/matrix.dat", 1465),
    (f"{SEGMENT}/payload_index/t7d8-tenant-map/values_to_points.bin", 30),
    (f"{SEGMENT}/payload_index/q15p-hash-map/values_to_points.bin", 60),
    (f"{SEGMENT}/vector_storage-sparse/store/page_0.dat", 530),
    ("segments/54f2/mutable_id_tracker.mappings", 1),  # an appendable segment: the load
    ("segments/54f2/payload_index/t7d8-hash-map/values_to_points.bin", 60),  # reads it all
]


def short(name: str) -> str:
    return "/".join(name.split("/")[-2:])


def test_warming_reads_what_queries_and_the_load_need_most_last() -> None:
    """Under a memory limit the page cache keeps the last files read: those must be what
    the load reads (WAL, appendable segments), then the HNSW graph, int8 vectors and the
    indexes every query uses."""
    order = [short(n) for n in warm_order([(n, mb << 20) for n, mb in SHARD_FILES])]
    assert sorted(order) == sorted(short(n) for n, _ in SHARD_FILES)
    pos = {name: i for i, name in enumerate(order)}
    loaded = [
        pos[name]
        for name in (
            "wal/closed-729",
            "54f2/mutable_id_tracker.mappings",
            "t7d8-hash-map/values_to_points.bin",
        )
    ]
    assert sorted(loaded) == list(range(len(order) - 3, len(order)))
    hot = [
        pos[name]
        for name in (
            "vector_index-dense/links_compressed.bin",
            "vector_storage-dense/quantized.data",
            "vector_index-sparse/inverted_index.dat",
            "t7d8-tenant-map/values_to_points.bin",
        )
    ]
    assert min(hot) > pos["vector_storage-dense/matrix.dat"] > pos["payload_storage/page_0.dat"]
    assert pos["payload_storage/page_0.dat"] > pos["store/page_0.dat"]
    assert pos["q15p-hash-map/values_to_points.bin"] < pos["vector_storage-dense/matrix.dat"]


def test_warming_a_shard_larger_than_its_budget_reads_only_the_hottest_files() -> None:
    files = [(n, mb << 20) for n, mb in SHARD_FILES]
    order = [short(n) for n in warm_order(files, budget=900 << 20)]
    assert order == [
        "vector_index-dense/links_compressed.bin",
        "vector_storage-dense/quantized.data",
        "vector_index-sparse/inverted_index.dat",
        "t7d8-tenant-map/values_to_points.bin",
        "wal/closed-729",
        "54f2/mutable_id_tracker.mappings",
        "t7d8-hash-map/values_to_points.bin",
    ]
    assert len(warm_order(files, budget=10 << 30)) == len(files)


def test_a_collection_has_one_owner_at_a_time(tmp_path: Path) -> None:
    """The a/b dirs, state file and op logs belong to whoever holds `<collection>.lock`:
    a second opener (another service, `freshrag optimize`) stops before touching them."""
    index = open_index(tmp_path)
    try:
        load(index, 0, 10)
        with pytest.raises(ShardBusy, match="open in another process"):
            open_index(tmp_path)
        with pytest.raises(ShardBusy):
            upgrade_offline(tmp_path, "chunks", MANUAL)
        assert index.count_chunks([]) == 10  # the first owner is untouched
    finally:
        index.close()
    again = open_index(tmp_path)  # released on close
    try:
        assert again.count_chunks([]) == 10
    finally:
        again.close()
