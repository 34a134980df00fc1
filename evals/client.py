"""The evaluation talks to FreshRAG like any client: HTTP for reads, Kafka for writes."""

from __future__ import annotations

import time
from typing import Any

import httpx

from ingest.events import DocumentEvent
from ingest.publisher import Publisher


class ServiceClient:
    def __init__(
        self, url: str, api_key: str, bootstrap: str, topic: str, timeout: float = 60.0
    ) -> None:
        self.http = httpx.Client(
            base_url=url.rstrip("/"),
            timeout=timeout,
            headers={"Authorization": f"Bearer {api_key}"},
        )
        self.bootstrap, self.topic = bootstrap, topic
        self._publisher: Publisher | None = None
        self._versions: dict[str, int | None] = {}

    def close(self) -> None:
        self.http.close()
        if self._publisher:
            self._publisher.close()

    def ready(self) -> bool:
        try:
            return self.http.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def retrieve(
        self, query: str, mode: str = "hybrid", top_k: int = 10, filters: dict | None = None
    ) -> tuple[list[dict[str, Any]], float]:
        started = time.perf_counter()
        r = self.http.post(
            "/retrieve",
            json={"query": query, "mode": mode, "top_k": top_k, "filters": filters or {}},
        )
        r.raise_for_status()
        return r.json()["hits"], (time.perf_counter() - started) * 1000

    def answer(self, query: str, top_k: int = 5) -> dict[str, Any] | None:
        r = self.http.post("/answer", json={"query": query, "top_k": top_k})
        if r.status_code == 404:
            return None  # a server without /answer
        r.raise_for_status()
        return r.json()

    def indexed_version(self, doc_id: str, fresh: bool = False) -> int | None:
        """The registry's current version (None when unknown or deleted)."""
        if fresh or doc_id not in self._versions:
            r = self.http.get(f"/documents/{doc_id}")
            self._versions[doc_id] = r.json()["version"] if r.status_code == 200 else None
        return self._versions[doc_id]

    def count_stale(self, hits: list[dict[str, Any]], fresh: bool = False) -> int:
        """Hits whose version is older than the registry's current one for their document.

        `fresh` re-reads each document's version once (not once per hit).
        """
        if fresh:
            for doc_id in {h["doc_id"] for h in hits}:
                self.indexed_version(doc_id, fresh=True)
        return sum(
            (current := self.indexed_version(h["doc_id"])) is not None and h["version"] < current
            for h in hits
        )

    def metrics(self) -> dict[str, float]:
        """The service's Prometheus counters, flattened to `name{labels}` → value."""
        out: dict[str, float] = {}
        for line in self.http.get("/metrics/").text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    out[name] = float(value)
                except ValueError:
                    continue
        return out

    def publish(self, events: list[DocumentEvent]) -> None:
        if self._publisher is None:
            self._publisher = Publisher(self.bootstrap, self.topic)
        self._publisher.publish(events, progress=False)
