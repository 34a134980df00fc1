"""The write path on the real index (both backends), without Kafka: diffing, versions, deletes."""

import pytest

from retrieval.search import Principal, Retriever
from tests.conftest import delete, make_indexer, upsert

pytestmark = pytest.mark.model

PARAS = {
    "Caching": "The cache framework stores rendered pages in memcached or redis for speed.",
    "Sessions": "Sessions keep per-visitor state on the server, keyed by a signed cookie.",
    "Signals": "Signals let decoupled applications get notified when actions occur elsewhere.",
    "Migrations": "Migrations propagate changes you make to your models into the database schema.",
    "Templates": "The template language renders HTML from context variables and filters.",
}
READER = Principal("t", "default", ("public",))


def doc(paras):
    return "# Handbook\n\n" + "\n\n".join(f"## {t}\n\n{body}" for t, body in paras.items())


def texts_for(retriever, query, k=10):
    return [h.payload["text"] for h in retriever.retrieve(READER, query, k, "sparse")]


def test_edit_one_paragraph_embeds_only_the_changed_chunk(index, dense, sparse):
    indexer = make_indexer(index, dense, sparse)
    retriever = Retriever(index, dense, sparse)
    before = dense.texts_encoded
    [first] = indexer.apply([upsert("handbook", doc(PARAS), 1)])
    assert (
        first.status == "indexed" and first.embedded == 5
    )  # 5 sections (the bare title folds into the first)
    assert dense.texts_encoded - before == 5

    edited = dict(
        PARAS, Sessions="Sessions keep per-visitor state in a database table, keyed by a cookie."
    )
    before = dense.texts_encoded
    [second] = indexer.apply([upsert("handbook", doc(edited), 2)])
    assert dense.texts_encoded - before == 1, "only the edited section may be re-embedded"
    assert (second.embedded, second.kept, second.removed) == (1, 4, 1)

    assert not any("signed cookie" in t for t in texts_for(retriever, "signed cookie sessions"))
    assert any("database table" in t for t in texts_for(retriever, "sessions database table"))
    hits = retriever.retrieve(READER, "migrations schema", 10, "sparse")
    assert {h.payload["version"] for h in hits} == {2}, "kept chunks carry the new version"
    assert index.get_document("default", "handbook").chunk_count == 5


def test_delete_then_older_events_never_resurrect(index, dense, sparse):
    indexer = make_indexer(index, dense, sparse)
    retriever = Retriever(index, dense, sparse)
    indexer.apply([upsert("d", doc(PARAS), 5)])
    assert texts_for(retriever, "memcached cache")
    [out] = indexer.apply([delete("d", 6)])
    assert out.status == "deleted"
    assert texts_for(retriever, "memcached cache") == []
    [late] = indexer.apply([upsert("d", doc(PARAS), 5)])
    assert late.status == "stale"
    assert texts_for(retriever, "memcached cache") == []
    state = index.get_document("default", "d")
    assert state.deleted and state.version == 6
    [back] = indexer.apply([upsert("d", doc(PARAS), 7)])
    assert back.status == "indexed" and texts_for(retriever, "memcached cache")


def test_older_version_after_newer_is_ignored_and_replay_changes_nothing(index, dense, sparse):
    indexer = make_indexer(index, dense, sparse)
    retriever = Retriever(index, dense, sparse)
    new = dict(PARAS, Caching="The cache framework now defaults to a local-memory backend.")
    indexer.apply([upsert("d", doc(new), 3)])
    [old] = indexer.apply([upsert("d", doc(PARAS), 2)])
    assert old.status == "stale"
    assert any("local-memory" in t for t in texts_for(retriever, "cache framework backend"))
    assert not any("memcached" in t for t in texts_for(retriever, "cache framework memcached"))

    snapshot = sorted((c.id, c.hash) for c in index.chunks_of("default", "d"))
    indexed_at = index.get_document("default", "d").indexed_at
    before = dense.texts_encoded
    [again] = indexer.apply([upsert("d", doc(new), 3)])
    assert again.status == "stale" and dense.texts_encoded == before
    assert sorted((c.id, c.hash) for c in index.chunks_of("default", "d")) == snapshot
    assert index.get_document("default", "d").indexed_at == indexed_at


def test_identical_text_in_another_document_reuses_the_stored_vector(index, dense, sparse):
    indexer = make_indexer(index, dense, sparse)
    indexer.apply([upsert("a", doc(PARAS), 1)])
    before = dense.texts_encoded
    [copy] = indexer.apply([upsert("b", doc(PARAS), 1)])
    assert (copy.new, copy.reused, copy.embedded) == (5, 5, 0)  # written, not re-embedded
    assert dense.texts_encoded == before


def test_unparseable_document_fails_alone(index, dense, sparse):
    indexer = make_indexer(index, dense, sparse)
    outs = indexer.apply([upsert("bad", "x", 1, mime="image/png"), upsert("good", doc(PARAS), 1)])
    by_doc = {o.event.doc_id: o for o in outs}
    assert by_doc["bad"].status == "failed" and "unsupported mime type" in by_doc["bad"].reason
    assert by_doc["good"].status == "indexed"
    assert index.get_document("default", "bad") is None


def test_an_unchanged_body_skips_parsing_and_refreshes_version_and_payload(index, dense, sparse):
    indexer = make_indexer(index, dense, sparse)
    indexer.apply([upsert("u", doc(PARAS), 1, metadata={"release": "5.1"})])
    prepared = []
    real_prepare = indexer.processor.prepare
    indexer.processor.prepare = lambda body, mime: prepared.append(mime) or real_prepare(body, mime)
    before = dense.texts_encoded
    [out] = indexer.apply([upsert("u", doc(PARAS), 2, metadata={"release": "5.2"})])
    assert out.status == "indexed" and "unchanged" in out.reason
    assert prepared == [] and dense.texts_encoded == before, "no parse, no embedding"
    assert index.get_document("default", "u").version == 2
    hits = Retriever(index, dense, sparse).retrieve(READER, "memcached redis cache", 10, "sparse")
    assert hits and {(h.payload["version"], h.payload["metadata"]["release"]) for h in hits} == {
        (2, "5.2")
    }
    changed = {**PARAS, "Templates": "A brand new closing section about templates."}
    [edited] = indexer.apply([upsert("u", doc(changed), 3)])
    assert edited.status == "indexed" and edited.reason is None and prepared == ["text/markdown"]


class _Counting:
    """The inline processor, counting the texts of each encode call."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner, self.calls, self.parsed = inner, [], 0
        self.fingerprint = inner.fingerprint

    def prepare_many(self, items, **kwargs):  # noqa: ANN001, ANN003, ANN201
        self.parsed += len(items)
        return self.inner.prepare_many(items, **kwargs)

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(self.inner, name)

    def encode(self, texts: list[str]) -> list[list[float]]:
        self.calls.append(len(texts))
        return self.inner.encode(texts)


def test_a_backfill_page_yields_to_a_live_event_mid_embedding_and_resumes(index, dense, sparse):
    """A big page does not hold a live edit for its whole embedding; its work is not lost."""
    indexer = make_indexer(index, dense, sparse)
    spy = indexer.processor = _Counting(indexer.processor)
    indexer.yield_group_chunks = 4
    big = {
        f"Topic {i}": f"Paragraph {i} explains the ocelot setting number {i}." for i in range(20)
    }
    page = upsert("big", doc(big), 1)
    live = iter([False, True])  # a live event arrives while the first slice embeds

    done = list(indexer.apply_iter([page], lambda: next(live, True), bulk=True))
    assert done == [] and spy.calls == [4], "gave up after one slice, wrote nothing"
    assert index.get_document("default", "big") is None

    # Every later try moves on by at least one slice, even while live events keep
    # arriving, and nothing is embedded twice.
    tries = 1
    while not (done := list(indexer.apply_iter([page], lambda: True, bulk=True))):
        tries += 1
    [outcome] = done
    assert tries == 4 and spy.calls == [4, 4, 4, 4, 4]
    assert spy.parsed == 1, "the page was parsed once, not once per try"
    assert outcome.status == "indexed" and (outcome.new, outcome.reused) == (20, 16)
    assert index.get_document("default", "big").chunk_count == 20
