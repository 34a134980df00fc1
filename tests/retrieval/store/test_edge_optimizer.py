"""The Edge optimiser online: cycles while queries and writes go on, vacuum, close and reopen,
settings and metadata indexes reaching the swapped-in copy, writes going first."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import qdrant_edge as qe

from freshrag.settings import Settings
from retrieval.store.edge import shards
from retrieval.store.edge.tuning import EdgeTuning
from retrieval.store.types import Match
from tests.conftest import wait_for
from tests.retrieval.store.edge_points import (
    N,
    Prober,
    dense_indexed,
    load,
    open_index,
    pid,
    points,
    top_hit,
)

pytestmark = pytest.mark.unit


@pytest.mark.slow  # thousands of points through a rebuild: seconds each
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


@pytest.mark.slow  # thousands of points through a rebuild: seconds each
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


@pytest.mark.slow  # thousands of points through a rebuild: seconds each
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


@pytest.mark.slow  # thousands of points through a rebuild: seconds each
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
