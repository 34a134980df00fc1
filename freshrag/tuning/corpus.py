"""The indexed chunks a tune learns from: one tenant's, or every tenant's.

Read from the serving index through the storage ports (the registry, then each
document's chunks in order), so a tune sees exactly what retrieval serves and nothing the
scope does not cover: no other tenant's page, no deleted document.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from freshrag.errors import TuneError
from freshrag.tuning.pairs import StoredChunk
from retrieval.store.types import DocKey

PAGE = 64  # documents per chunk read


class TuneInputError(TuneError):
    """The index cannot make a tune: empty, too small, or a tenant with nothing indexed."""


@dataclass(frozen=True, slots=True)
class Corpus:
    scope: str  # "tenant acme", "every tenant"
    documents: list[list[StoredChunk]]

    @property
    def chunks(self) -> int:
        return sum(len(d) for d in self.documents)


def read_corpus(
    index,  # noqa: ANN001  a DocumentRegistry and ChunkSearch (the serving Index)
    tenant: str | None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Corpus:
    """Every live document of `tenant` (None: every tenant), its chunks in chunk order."""
    keys: list[DocKey] = [
        (s.tenant, s.doc_id)
        for s in index.documents()
        if not s.deleted and (tenant is None or s.tenant == tenant)
    ]
    documents: list[list[StoredChunk]] = []
    for start in range(0, len(keys), PAGE):
        batch = keys[start : start + PAGE]
        stored = index.chunk_payloads(batch)
        for key in batch:
            chunks = [StoredChunk.of(payload) for _, payload in stored.get(key, [])]
            if chunks:
                documents.append(chunks)
        if on_progress is not None:
            on_progress(min(start + PAGE, len(keys)), len(keys))
    scope = "every tenant" if tenant is None else f"tenant {tenant}"
    return Corpus(scope, documents)
