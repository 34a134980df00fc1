"""Copy an index into a generation for another embedding model, from the stored chunks.

No parsing and no republishing: each stored chunk's text and heading path give the text
the new model encodes and the chunk's new hash (the model is part of it). Registry
entries are read before the chunks they describe, so a document changed during the copy
ends up with chunks at least as new as its registry version; the new generation's own
consumer then re-applies anything newer (versions make the rest no-ops). Resumable and
never backwards: a document the target already holds at the same or a newer version
(copied before, or advanced by the new generation's own worker) is left alone, and a
chunk already in the target under its new hash is not embedded again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from ingest.chunker import Chunker
from retrieval.encoders import SparseEncoder
from retrieval.store.ports import Index
from retrieval.store.types import ChunkPoint, chunk_point_id


class CopyStopped(Exception):  # noqa: N818 (control flow)
    """The copy was asked to stop (the standby was dropped or the service is closing)."""


@dataclass(slots=True)
class CopyProgress:
    documents: int = 0
    total_documents: int = 0
    embedded: int = 0  # chunks encoded with the new model
    kept: int = 0  # already in the target under their new hash (a resumed copy)
    removed: int = 0  # target chunks no longer in the source
    skipped: int = 0  # documents the target already has at this version or newer
    done: bool = False


def copy_index(
    source: Index,
    target: Index,
    chunker: Chunker,
    encode: Callable[[list[str]], list[list[float]]],
    sparse: SparseEncoder,
    *,
    page: int = 32,
    embed_batch: int = 64,
    on_progress: Callable[[CopyProgress], None] | None = None,
    stop: threading.Event | None = None,
) -> CopyProgress:
    """Makes `target` hold every document of `source`, encoded by `encode` (the target's
    model) and hashed by `chunker` (configured with that model)."""
    states = list(source.documents())  # registry first: see the module's docstring
    progress = CopyProgress(total_documents=len(states))
    for start in range(0, len(states), page):
        if stop is not None and stop.is_set():
            raise CopyStopped
        page_states = states[start : start + page]
        held = target.get_documents([(s.tenant, s.doc_id) for s in page_states])
        batch = [
            s
            for s in page_states
            if (t := held.get((s.tenant, s.doc_id))) is None or t.version < s.version
        ]
        progress.skipped += len(page_states) - len(batch)
        keys = [(s.tenant, s.doc_id) for s in batch]
        stored = source.chunk_payloads(keys)
        present = target.chunks_of_many(keys)
        todo: list[tuple[tuple[str, str], dict, str, str]] = []
        stale: list[str] = []
        for key in keys:
            records = stored.get(key, [])
            stamped = chunker.restamp(
                [(p.get("text", ""), tuple(p.get("path") or ())) for _, p in records]
            )
            wanted = {h for _, h in stamped}
            have = {c.hash for c in present.get(key, [])}
            stale += [c.id for c in present.get(key, []) if c.hash not in wanted]
            for (_, payload), (indexed, h) in zip(records, stamped, strict=True):
                if h in have:  # its vector is right; its payload (acl, version…) may not be
                    target.set_payload([chunk_point_id(*key, h)], {**payload, "hash": h})
                    progress.kept += 1
                else:
                    todo.append((key, payload, indexed, h))
        for at in range(0, len(todo), embed_batch):
            part = todo[at : at + embed_batch]
            texts = [indexed for _, _, indexed, _ in part]
            dense = encode(texts)
            sparse_vecs = sparse.encode_documents(texts)
            target.upsert_chunks(
                [
                    ChunkPoint(chunk_point_id(t, d, h), vec, sv, {**payload, "hash": h})
                    for ((t, d), payload, _, h), vec, sv in zip(
                        part, dense, sparse_vecs, strict=True
                    )
                ]
            )
            progress.embedded += len(part)
            if stop is not None and stop.is_set():
                raise CopyStopped
        if stale:
            target.delete_chunks(stale)
            progress.removed += len(stale)
        for state in batch:
            target.put_document(state)
        progress.documents += len(page_states)
        if on_progress is not None:
            on_progress(progress)
    progress.done = True
    if on_progress is not None:
        on_progress(progress)
    return progress
