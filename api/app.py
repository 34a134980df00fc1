"""The HTTP surface: /retrieve, /documents/{doc_id}, /healthz, /readyz, /metrics, /docs."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from prometheus_client import Histogram, make_asgi_app
from pydantic import BaseModel, ConfigDict, Field

from api.auth import KeyStore
from retrieval.filters import FilterError, parse_filters
from retrieval.index import Index
from retrieval.search import Principal, Retriever
from retrieval.settings import Settings

REQUEST_SECONDS = Histogram(
    "freshrag_api_request_seconds",
    "API latency",
    ["endpoint", "mode"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)


@dataclass
class Services:
    settings: Settings
    index: Index
    retriever: Retriever
    keys: KeyStore
    broker_ready: Callable[[], bool]


class RetrieveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, description="What to search for.")
    top_k: int = Field(5, ge=1, description="Hits to return (at most FRESHRAG_MAX_TOP_K).")
    mode: Literal["hybrid", "dense", "sparse"] = Field(
        "hybrid", description="hybrid fuses dense and sparse inside Qdrant with RRF."
    )
    filters: dict[str, Any] = Field(
        default_factory=dict,
        description='Equality {"doc_id": "a"}, any-of {"metadata.lang": ["en", "de"]}, '
        'range {"version": {"gte": 2}}. Fields: doc_id, title, source, mime, version, '
        "chunk_index, metadata.<key>.",
    )


class Hit(BaseModel):
    text: str
    score: float
    doc_id: str
    version: int
    chunk_index: int
    title: str | None = None
    source: str | None = None
    section: str | None = None
    event_time: str | None = None
    indexed_at: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class RetrieveResponse(BaseModel):
    hits: list[Hit]
    mode: str
    took_ms: float


class DocumentInfo(BaseModel):
    doc_id: str
    version: int
    chunk_count: int
    indexed_at: str
    event_time: str | None = None
    title: str | None = None
    source: str | None = None


def create_app(services: Services) -> FastAPI:
    settings = services.settings
    app = FastAPI(
        title="FreshRAG",
        version="0.1.0",
        description="Fresh, grounded context from documents that change. "
        "Authenticate with `Authorization: Bearer <key>`.",
    )
    app.state.services = services
    app.mount("/metrics", make_asgi_app())

    def principal(request: Request) -> Principal:
        return services.keys.authenticate(request)

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    def readyz() -> Any:
        checks = {
            "broker": services.broker_ready(),
            "qdrant": services.index.ping(),
            "model": services.retriever.dense is not None,
        }
        if not all(checks.values()):
            raise HTTPException(503, {"ready": False, "checks": checks})
        return {"ready": True, "checks": checks}

    @app.post("/retrieve", response_model=RetrieveResponse, tags=["search"])
    def retrieve(body: RetrieveRequest, who: Principal = Depends(principal)) -> RetrieveResponse:
        started = time.perf_counter()
        query = body.query.strip()
        if not query:
            raise HTTPException(422, "query is empty")
        if len(query) > settings.max_query_chars:
            raise HTTPException(
                422, f"query is {len(query)} characters; the limit is {settings.max_query_chars}"
            )
        if body.top_k > settings.max_top_k:
            raise HTTPException(422, f"top_k must be between 1 and {settings.max_top_k}")
        try:
            conditions = parse_filters(body.filters)
        except FilterError as exc:
            raise HTTPException(422, str(exc)) from exc
        hits = services.retriever.retrieve(who, query, body.top_k, body.mode, conditions)
        took = time.perf_counter() - started
        REQUEST_SECONDS.labels("retrieve", body.mode).observe(took)
        return RetrieveResponse(
            hits=[_hit(h.score, h.payload) for h in hits],
            mode=body.mode,
            took_ms=round(took * 1000, 3),
        )

    @app.get("/documents/{doc_id:path}", response_model=DocumentInfo, tags=["documents"])
    def document(
        doc_id: str,
        min_version: int | None = Query(
            None, ge=0, description="Wait until this version (or newer) is searchable."
        ),
        wait: float = Query(10.0, ge=0, description="Seconds to wait for min_version."),
        who: Principal = Depends(principal),
    ) -> DocumentInfo:
        deadline = time.monotonic() + min(wait, settings.wait_max_seconds)
        while True:
            state = services.index.get_document(who.tenant, doc_id)
            if state is not None and not set(state.acl) & set(who.groups):
                state = None  # not readable by this caller: indistinguishable from absent
            reached = state is not None and (min_version is None or state.version >= min_version)
            if reached or min_version is None or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        if min_version is not None and not reached:
            have = f"version {state.version}" if state else "nothing"
            raise HTTPException(
                504, f"version {min_version} of '{doc_id}' not indexed in time (indexed: {have})"
            )
        if state is None:
            raise HTTPException(404, f"document '{doc_id}' is not indexed")
        if state.deleted:
            raise HTTPException(404, f"document '{doc_id}' was deleted at version {state.version}")
        return DocumentInfo(
            doc_id=state.doc_id,
            version=state.version,
            chunk_count=state.chunk_count,
            indexed_at=state.indexed_at,
            event_time=state.event_time,
            title=state.title,
            source=state.source,
        )

    return app


def _hit(score: float, p: dict[str, Any]) -> Hit:
    return Hit(
        text=p.get("text", ""),
        score=score,
        doc_id=p["doc_id"],
        version=int(p["version"]),
        chunk_index=int(p.get("chunk_index", 0)),
        title=p.get("title"),
        source=p.get("source"),
        section=p.get("section"),
        event_time=p.get("event_time"),
        indexed_at=p.get("indexed_at"),
        metadata=p.get("metadata") or {},
    )
