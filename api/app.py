"""The HTTP surface: /retrieve, /documents/{doc_id}, /healthz, /readyz, /metrics, /docs."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from prometheus_client import Histogram, make_asgi_app
from pydantic import BaseModel, ConfigDict, Field

from api.auth import KeyStore
from retrieval.answers import AnswerService
from retrieval.filters import FilterError, parse_filters
from retrieval.index import Condition, Index
from retrieval.prompts import PromptError, PromptRegistry
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
    answers: AnswerService | None = None
    prompts: PromptRegistry | None = None


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


class PromptSelector(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Default: grounded-answer.")
    label: str | None = Field(None, description="Release label; default: production.")
    version: int | None = Field(None, ge=1, description="Exact version (wins over label).")


class AnswerRequest(RetrieveRequest):
    prompt: PromptSelector | None = None
    stream: bool = Field(
        False, description="Server-Sent Events; citations come in the final event."
    )


class Citation(BaseModel):
    n: int
    doc_id: str
    version: int
    chunk_index: int | None = None
    title: str | None = None
    source: str | None = None
    text: str = ""


class AnswerResponse(BaseModel):
    answer: str
    citations: list[Citation]
    provider: str
    model: str
    prompt: str
    cached: bool
    refused: bool
    attempts: list[dict[str, str]] = Field(default_factory=list)
    timings: dict[str, float] = Field(default_factory=dict)
    cache_similarity: float | None = None


class PromptInfo(BaseModel):
    name: str
    version: int
    labels: list[str]
    description: str


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

    def validated(body: RetrieveRequest) -> tuple[str, list[Condition]]:
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
            return query, parse_filters(body.filters)
        except FilterError as exc:
            raise HTTPException(422, str(exc)) from exc

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
        query, conditions = validated(body)
        hits = services.retriever.retrieve(who, query, body.top_k, body.mode, conditions)
        took = time.perf_counter() - started
        REQUEST_SECONDS.labels("retrieve", body.mode).observe(took)
        return RetrieveResponse(
            hits=[_hit(h.score, h.payload) for h in hits],
            mode=body.mode,
            took_ms=round(took * 1000, 3),
        )

    @app.post(
        "/answer",
        response_model=AnswerResponse,
        tags=["answers"],
        responses={200: {"content": {"text/event-stream": {}}}},
    )
    def answer(body: AnswerRequest, who: Principal = Depends(principal)) -> Any:
        if services.answers is None or services.prompts is None:
            raise HTTPException(503, "answers are not configured on this server")
        query, conditions = validated(body)
        sel = body.prompt or PromptSelector()
        try:
            prompt = services.prompts.resolve(sel.name, sel.label, sel.version)
            result = services.answers.answer(
                who, query, body.top_k, body.mode, conditions, body.filters, prompt
            )
        except PromptError as exc:
            raise HTTPException(422, str(exc)) from exc
        REQUEST_SECONDS.labels("answer", body.mode).observe(result["timings"]["total_ms"] / 1000)
        payload = AnswerResponse(**result)
        if not body.stream:
            return payload
        return StreamingResponse(_sse(payload), media_type="text/event-stream")

    @app.get("/prompts", response_model=list[PromptInfo], tags=["answers"])
    def prompts(who: Principal = Depends(principal)) -> list[PromptInfo]:
        if services.prompts is None:
            return []
        return [
            PromptInfo(
                name=p.name, version=p.version, labels=list(p.labels), description=p.description
            )
            for p in services.prompts.prompts
        ]

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


def _sse(payload: AnswerResponse):  # noqa: ANN202
    """The answer text in word-group deltas, then one `done` event with citations and metadata."""
    words = payload.answer.split(" ")
    for i in range(0, len(words), 8):
        delta = " ".join(words[i : i + 8]) + (" " if i + 8 < len(words) else "")
        yield f"event: delta\ndata: {json.dumps({'text': delta})}\n\n"
    yield f"event: done\ndata: {payload.model_dump_json()}\n\n"


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
