"""The Edge shard layout on disk: the state file lost or damaged, page-cache warming order,
one owner per collection."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from retrieval.store.edge import layout
from retrieval.store.edge.lock import ShardBusy
from retrieval.store.edge.upgrade import upgrade_offline
from retrieval.store.edge.warming import warm_order
from tests.retrieval.store.edge_points import (
    MANUAL,
    load,
    open_index,
    points,
)

pytestmark = pytest.mark.unit


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
