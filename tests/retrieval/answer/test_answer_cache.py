"""The answer cache forgets: expired entries are purged and the collection is bounded.

Runs on both backends (the `index` fixture: Qdrant Edge and the server adapter); a fake
clock drives expiry and the purge interval.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from retrieval.answer.cache import AnswerCache

pytestmark = pytest.mark.model

TTL = 60.0


def vec(i: int, dim: int) -> list[float]:
    """A basis vector: distinct entries never match each other above any threshold."""
    v = [0.0] * dim
    v[i] = 1.0
    return v


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Counting:
    """Forwards to the real index and counts calls, to see when upkeep runs."""

    def __init__(self, index: Any) -> None:
        self._index = index
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._index, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return attr(*args, **kwargs)

        return counted


def cache_for(index: Any, clock: Clock, **kw: Any) -> AnswerCache:
    return AnswerCache(index, 0.93, TTL, clock=clock, **kw)


def put(cache: AnswerCache, i: int, dim: int) -> None:
    cache.put(vec(i, dim), "scope", {"answer": f"answer {i} [1]"}, [])


def answer_of(cache: AnswerCache, i: int, dim: int) -> str | None:
    hit = cache.get(vec(i, dim), "scope")
    return None if hit is None else hit["answer"]


def test_index_purges_only_expired_entries(index, dense):
    for i, expires_at in enumerate([10.0, 20.0, 30.0, 40.0]):
        index.cache_put(
            f"00000000-0000-0000-0000-00000000000{i}",
            vec(i, dense.dim),
            {"scope": "s", "created_at": expires_at - TTL, "expires_at": expires_at, "answer": {}},
        )
    assert index.cache_count() == 4
    assert index.cache_purge_expired(20.0) == 2  # expires_at <= now goes
    assert index.cache_count() == 2
    assert index.cache_purge_expired(20.0) == 0
    assert index.cache_search(vec(2, dense.dim), "s", 20.0, 0.93) is not None
    assert index.cache_search(vec(0, dense.dim), "s", 0.0, 0.93) is None  # gone, not hidden


def test_index_trims_the_oldest_entries(index, dense):
    for i in range(6):
        index.cache_put(
            f"00000000-0000-0000-0000-00000000000{i}",
            vec(i, dense.dim),
            # Inserted out of order: age is created_at, not insertion order.
            {"scope": "s", "created_at": float((i * 5) % 6), "expires_at": 1e12, "answer": {}},
        )
    assert index.cache_trim(10) == 0 and index.cache_count() == 6
    assert index.cache_trim(2) == 4 and index.cache_count() == 2
    kept = {
        i for i in range(6) if index.cache_search(vec(i, dense.dim), "s", 0.0, 0.93) is not None
    }
    assert {(i * 5) % 6 for i in kept} == {4, 5}  # the two newest


def test_expired_entries_are_deleted_by_the_purge(index, dense):
    clock = Clock(1000.0)
    cache = cache_for(index, clock, purge_interval_s=30.0)
    put(cache, 0, dense.dim)  # expires 1060
    clock.now = 1010.0
    put(cache, 1, dense.dim)  # expires 1070
    assert index.cache_count() == 2

    clock.now = 1065.0  # entry 0 expired, entry 1 not; a purge is due (last at 1000)
    put(cache, 2, dense.dim)
    assert index.cache_count() == 2, "the expired entry is deleted, not only filtered"
    assert answer_of(cache, 0, dense.dim) is None
    assert answer_of(cache, 1, dense.dim) == "answer 1 [1]"
    assert answer_of(cache, 2, dense.dim) == "answer 2 [1]"

    clock.now = 1200.0  # everything expired
    put(cache, 3, dense.dim)
    assert index.cache_count() == 1 and answer_of(cache, 3, dense.dim) == "answer 3 [1]"


def test_purge_runs_at_most_once_per_interval(index, dense):
    clock = Clock(1000.0)
    counting = Counting(index)
    cache = cache_for(counting, clock, purge_interval_s=100.0)
    put(cache, 0, dense.dim)  # expires 1060; first put: a purge is due
    assert counting.calls["cache_purge_expired"] == 1

    clock.now = 1070.0  # entry 0 expired: filtered at once, deleted at the next purge
    put(cache, 1, dense.dim)  # expires 1130
    assert counting.calls["cache_purge_expired"] == 1
    assert answer_of(cache, 0, dense.dim) is None and index.cache_count() == 2

    clock.now = 1100.0  # due
    put(cache, 2, dense.dim)  # expires 1160
    assert counting.calls["cache_purge_expired"] == 2 and index.cache_count() == 2

    clock.now = 1199.0
    put(cache, 3, dense.dim)  # expires 1259
    assert counting.calls["cache_purge_expired"] == 2 and index.cache_count() == 3

    clock.now = 1200.0  # due: entries 1 and 2 have expired
    put(cache, 4, dense.dim)
    assert counting.calls["cache_purge_expired"] == 3 and index.cache_count() == 2
    assert answer_of(cache, 3, dense.dim) == "answer 3 [1]"


def test_cache_never_holds_more_than_max_entries(index, dense):
    clock = Clock(1000.0)
    cache = cache_for(index, clock, max_entries=3)
    for i in range(7):
        clock.now = 1000.0 + i
        put(cache, i, dense.dim)
        assert index.cache_count() == min(i + 1, 3)
    assert [answer_of(cache, i, dense.dim) for i in range(7)] == [
        None,
        None,
        None,
        None,
        "answer 4 [1]",
        "answer 5 [1]",
        "answer 6 [1]",
    ], "the oldest go first"


def test_upkeep_failures_never_reach_the_answer_path(index, dense, caplog):
    class Broken(Counting):
        def cache_purge_expired(self, now: float) -> int:
            raise RuntimeError("backend hiccup")

        def cache_trim(self, max_entries: int) -> int:
            raise RuntimeError("backend hiccup")

    cache = cache_for(Broken(index), Clock(1000.0))
    with caplog.at_level(logging.WARNING, logger="freshrag.cache"):
        put(cache, 0, dense.dim)
    assert answer_of(cache, 0, dense.dim) == "answer 0 [1]"
    assert "purging expired entries failed" in caplog.text
    assert "trimming to 10000 entries failed" in caplog.text


def test_max_entries_must_be_positive(index):
    with pytest.raises(ValueError, match="max_entries"):
        AnswerCache(index, 0.93, TTL, max_entries=0)


def test_answer_collection_has_float_indexes_for_purge_and_trim(edge_index):
    schema = edge_index.answers.info().payload_schema
    assert {"scope", "expires_at", "created_at"} <= set(schema)
