"""Which index backend serves: the one place that knows both adapters.

Kept apart from the contract (`retrieval.store.ports`), which both adapters implement:
the contract then imports neither of them, and no import runs in a circle.
"""

from __future__ import annotations

from typing import Any

from retrieval.store.ports import Index


def open_index(settings: Any) -> Index:
    """Qdrant server when `qdrant_url` is set, else the embedded Edge shard."""
    if settings.qdrant_url:
        from retrieval.store.server import ServerIndex

        return ServerIndex.connect(
            url=settings.qdrant_url,
            api_key=settings.qdrant_api_key,
            collection=settings.collection,
            registry=settings.registry_collection,
        )
    from retrieval.store.edge.adapter import EdgeIndex
    from retrieval.store.edge.tuning import EdgeTuning

    return EdgeIndex(
        settings.data_dir / "edge",
        settings.collection,
        settings.registry_collection,
        tuning=EdgeTuning.from_settings(settings),
    )
