"""The evaluation talks to FreshRAG like any client: HTTP for reads, Kafka for writes."""

from __future__ import annotations

import time
from typing import Any

import httpx

from ingest.events import DocumentEvent
from ingest.publisher import Publisher

# A readiness probe that hangs is an answer too: the nightly job must say so quickly.
READY_TIMEOUT_S = 5.0
# /answer's top_k (its contexts); /retrieve with the same top_k, mode and grouping returns them.
ANSWER_TOP_K = 5


class ServiceUnreachable(RuntimeError):
    """The API does not answer, or answers that it is not ready: one line for the user."""


class ServiceClient:
    def __init__(
        self,
        url: str,
        api_key: str,
        bootstrap: str,
        topic: str,
        timeout: float = 60.0,
        generation: str = "serving",
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"}
        if generation != "serving":  # the standby being built by `freshrag reindex`
            headers["X-FreshRAG-Generation"] = generation
        self.http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            headers=headers,
            follow_redirects=True,
        )
        self.bootstrap, self.topic = bootstrap, topic
        self._publisher: Publisher | None = None
        self._versions: dict[str, int | None] = {}
        # None: not tried yet; True: the server honours "cache": false; False: it rejects it.
        self.cache_bypass: bool | None = None

    def close(self) -> None:
        self.http.close()
        if self._publisher:
            self._publisher.close()

    def readiness(self) -> dict[str, Any]:
        """GET /readyz as JSON (200 or 503); ServiceUnreachable when nothing usable answers."""
        try:
            r = self.http.get("/readyz", timeout=READY_TIMEOUT_S)
        except httpx.TimeoutException as exc:
            raise ServiceUnreachable(
                f"the service at {self.url} did not answer GET /readyz within {READY_TIMEOUT_S:.0f} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise ServiceUnreachable(
                f"cannot reach the service at {self.url} ({exc}); start it with `make up` or pass --url"
            ) from exc
        try:
            body = r.json()
        except ValueError:
            body = {}
        if r.status_code == 503 and isinstance(body.get("detail"), dict):
            body = body["detail"]  # FastAPI wraps the 503's body
        if r.status_code not in (200, 503) or not isinstance(body, dict):
            raise ServiceUnreachable(
                f"GET {self.url}/readyz answered {r.status_code}: is this a FreshRAG service?"
            )
        body.setdefault("ready", r.status_code == 200)
        return body

    def check_ready(self) -> dict[str, Any]:
        """The readiness body, or ServiceUnreachable naming the checks that fail."""
        body = self.readiness()
        if not body.get("ready"):
            failing = [k for k, ok in (body.get("checks") or {}).items() if not ok]
            raise ServiceUnreachable(
                f"the service at {self.url} is not ready (failing: {', '.join(failing) or 'unknown'})"
            )
        return body

    def ready(self) -> bool:
        try:
            return bool(self.readiness().get("ready"))
        except ServiceUnreachable:
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

    def providers(self) -> list[str]:
        """The names of the service's answer chain, in order ([] on a server without it)."""
        r = self.http.get("/providers")
        if r.status_code == 404:
            return []
        r.raise_for_status()
        return [p["name"] for p in r.json()]

    def usage(self, since: str, until: str, scope: str) -> dict[str, Any] | str:
        """GET /usage over [since, until) in `scope` ("key": this key's own calls, "all":
        every key's, admin keys only); a one-line reason instead when it cannot be read."""
        r = self.http.get("/usage", params={"since": since, "until": until, "scope": scope})
        if r.status_code == 200:
            return r.json()
        if r.status_code == 404:
            return "the service has no /usage"
        if r.status_code == 403:
            return "the eval's key is not an admin key"
        if r.status_code == 409:
            return "the service keeps no usage ledger"
        return f"GET /usage answered {r.status_code}"

    def prompts(self) -> list[dict[str, Any]]:
        """GET /prompts: every prompt version the service serves, with its labels."""
        r = self.http.get("/prompts")
        if r.status_code == 404:
            return []
        r.raise_for_status()
        return list(r.json())

    def answer(
        self,
        query: str,
        top_k: int = ANSWER_TOP_K,
        provider: str | None = None,
        prompt: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """/answer with the answer cache bypassed, so latency and quality are the pipeline's.

        A server that does not know the `cache` option rejects it with a 422: then the
        request is repeated without it, and `cache_bypass` records that answers may be
        cache hits. `provider` asks that member of the chain alone; `prompt` is /answer's
        prompt selection (`{"name": ..., "version": ...}`), the service's default if None.
        """
        body: dict[str, Any] = {"query": query, "top_k": top_k}
        if provider is not None:
            body["provider"] = provider
        if prompt is not None:
            body["prompt"] = prompt
        if self.cache_bypass is not False:
            body["cache"] = False
        started = time.perf_counter()
        r = self.http.post("/answer", json=body)
        if r.status_code == 422 and "cache" in body and "cache" in r.text:
            self.cache_bypass = False
            del body["cache"]
            started = time.perf_counter()
            r = self.http.post("/answer", json=body)
        elif "cache" in body and r.is_success:
            self.cache_bypass = True
        if r.status_code == 404:
            return None  # a server without /answer
        client_ms = (time.perf_counter() - started) * 1000
        if r.status_code == 504:
            # The answer deadline ran out before any provider served: for the score, a
            # refusal the provider(s) caused; one slow answer must not end the whole run.
            return {
                "answer": "",
                "citations": [],
                "provider": "none",
                "refused": True,
                "timed_out": True,
                "attempts": [{"provider": provider or "chain", "outcome": "deadline"}],
                "client_ms": client_ms,
            }
        r.raise_for_status()
        out = r.json()
        out["client_ms"] = client_ms
        return out

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

    def metric_samples(self) -> list[tuple[str, dict[str, str], float]]:
        """The service's Prometheus samples as (name, labels, value), parsed by prometheus_client."""
        from prometheus_client.parser import text_string_to_metric_families

        r = self.http.get("/metrics")
        r.raise_for_status()
        return [
            (s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(r.text)
            for s in family.samples
        ]

    def metrics(self) -> dict[str, float]:
        """The samples flattened to `name{label="value",...}` → value (`name` alone without labels)."""
        out: dict[str, float] = {}
        for name, labels, value in self.metric_samples():
            inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
            out[f"{name}{{{inner}}}" if inner else name] = value
        return out

    def publish(self, events: list[DocumentEvent]) -> None:
        if self._publisher is None:
            self._publisher = Publisher(self.bootstrap, self.topic)
        self._publisher.publish(events, progress=False)
