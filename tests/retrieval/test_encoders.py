"""The query encoder under concurrency: batching must not change vectors."""

import pytest


@pytest.mark.model
def test_concurrent_queries_are_batched_and_equal_single_encodes(dense):
    import threading

    import numpy as np

    texts = [f"how do I configure feature number {i}?" for i in range(24)]
    expected = dense.encode(texts)
    results: dict[int, list[float]] = {}
    batches_before = dense._queries.batches
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, dense.encode_query(texts[i])))
        for i in range(len(texts))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, v in results.items():
        assert np.allclose(v, expected[i], atol=1e-5)
    assert dense._queries.batches - batches_before < len(texts), "concurrent queries share batches"
    assert dense.encode_query(texts[0]) == results[0]  # served from the cache


@pytest.mark.model
def test_headings_are_encoded_once_and_match_plain_encodes(dense):
    import numpy as np

    headings = ["Data Migrations", "Avoiding race conditions using F()", "Data Migrations"]
    before = dense.texts_encoded
    first = dense.encode_headings(headings)
    assert dense.texts_encoded - before == 2  # the repeated heading is encoded once
    expected = dense.encode(["Data Migrations", "Avoiding race conditions using F()"])
    assert np.allclose(first[0], expected[0], atol=2e-3)
    assert np.allclose(first[1], expected[1], atol=2e-3)
    assert np.array_equal(first[0], first[2])
    before = dense.texts_encoded
    again = dense.encode_headings(headings[:2])
    assert dense.texts_encoded == before, "served from the cache"
    assert all(np.array_equal(a, b) for a, b in zip(again, first[:2], strict=True))
    assert first[0].dtype == np.float16  # kept small: 768 bytes at 384 dims


@pytest.mark.unit
def test_the_lru_drops_the_least_recently_used():
    import numpy as np

    from retrieval.encoders import VectorLru

    lru = VectorLru(2)
    v = {t: np.full(2, n, dtype=np.float32) for n, t in enumerate("abc")}
    lru.put_many({"a": v["a"], "b": v["b"]})
    assert set(lru.get_many(["a"])) == {"a"}  # a is now the most recent
    lru.put_many({"c": v["c"]})
    assert set(lru.get_many(["a", "b", "c"])) == {"a", "c"} and len(lru) == 2
    lru.clear()
    assert lru.get_many(["a"]) == {}


@pytest.mark.model
def test_headings_stay_out_of_the_query_cache_and_rows_do_not_pin_batches(dense):
    dense.encode_headings(["A heading nobody asks about"])
    assert dense._queries._cache.get_many(["A heading nobody asks about"]) == {}
    dense.encode_query("a query that is kept")
    kept = dense._queries._cache.get_many(["a query that is kept"])["a query that is kept"]
    assert kept.base is None  # its own memory, not a view of the whole batch


@pytest.mark.model
def test_query_batches_run_traced_and_give_the_eager_models_vectors():
    """The traced graph serves query batches once `serve_queries` traced it; its vectors
    are the eager model's, whatever the batch's size and lengths (padding, truncation)."""
    import numpy as np

    from retrieval.encoders import DenseEncoder

    encoder = DenseEncoder("all-MiniLM-L6-v2")
    texts = ["deploy", "How do I run the ingest worker?", "word " * 400]
    eager = encoder.encode_batch(texts)
    assert not encoder.traced
    encoder.serve_queries(1, lambda: True)  # traces in the background
    assert encoder.trace() and encoder.traced  # waits for that trace
    for batch in ([texts[0]], texts, [texts[2], texts[1]]):
        traced = encoder.encode_batch(batch)
        expected = np.stack([eager[texts.index(t)] for t in batch])
        assert traced.shape == expected.shape
        assert float((traced * expected).sum(axis=1).min()) > 0.9999
    encoder.serve_queries(1, lambda: True, traced=False)  # FRESHRAG_ENCODER_TRACED=false
    assert not encoder.traced


@pytest.mark.model
def test_a_trace_that_differs_from_the_model_is_not_used(dense, caplog):
    """The check is real: a graph whose vectors differ from the eager ones (here the
    'eager' side is negated) is refused, and the log says why."""
    from retrieval.traced import trace

    model, prepare = dense._model, dense._prepare
    assert trace(model, prepare, lambda t: dense._eager(prepare(t))) is not None
    with caplog.at_level("WARNING", logger="freshrag.encoders"):
        assert trace(model, prepare, lambda t: -dense._eager(prepare(t))) is None
    assert "traced model differs" in caplog.text


@pytest.mark.model
def test_batch_encodes_through_the_traced_graph_keep_order_and_vectors():
    """The ingest embedder's path: longest-first batches of `batch_size`, rows back in the
    caller's order, the eager model's vectors."""

    from retrieval.encoders import DenseEncoder

    encoder = DenseEncoder("all-MiniLM-L6-v2", batch_size=2)
    texts = ["a", "the worker commits offsets " * 40, "short text", "medium sized text here", "b"]
    eager = encoder.encode_array(texts)
    assert encoder.trace()
    traced = encoder.encode_array(texts)
    assert traced.shape == eager.shape
    assert float((traced * eager).sum(axis=1).min()) > 0.9999
    assert encoder.texts_encoded == 2 * len(texts)
