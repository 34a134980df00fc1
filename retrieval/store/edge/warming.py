"""Reading a shard's files into the page cache before its load needs them."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from retrieval.memory import memory_limit_bytes
from retrieval.store.edge.tuning import FILTERED_BY_EVERY_QUERY

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
    """Which shard files (relative path, size) `warm` reads, in order: what queries read
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
        if "/payload_index/" in path and any(f"-{f}-" in name for f in FILTERED_BY_EVERY_QUERY):
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


def warm(path: Path) -> float:
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
