"""The query encoder under concurrency: batching must not change vectors."""


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
