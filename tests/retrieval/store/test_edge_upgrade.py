"""The offline upgrade of Edge shards (`freshrag optimize` and the service's own), in steps,
interrupted, and over every live generation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from freshrag.cli import cli
from freshrag.settings import Settings
from retrieval.store.edge import rebuild
from retrieval.store.edge.adapter import EdgeIndex
from retrieval.store.edge.upgrade import upgrade_offline
from tests.retrieval.store.edge_points import (
    DIM,
    MANUAL,
    N,
    Prober,
    dense_indexed,
    load,
    open_index,
    pid,
    top_hit,
)

pytestmark = pytest.mark.unit


@pytest.mark.slow  # thousands of points through a rebuild: seconds each
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

        # The probe wrote for as long as the first cycle took (more on a loaded machine):
        # one step holds what it wrote and the 300 below, so this cycle is never a rebuild.
        monkeypatch.setattr(rebuild, "REPLAY_STEP", max(1_000, 2 * (written - N + 300) + 1))
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


@pytest.mark.slow  # thousands of points through a rebuild: seconds each
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


@pytest.mark.slow  # thousands of points through a rebuild: seconds each
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


@pytest.mark.slow  # thousands of points through a rebuild: seconds each
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
