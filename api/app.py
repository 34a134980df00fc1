"""The HTTP surface: /retrieve, /answer, /prompts, /documents/{doc_id}, /healthz, /readyz,
/metrics, /docs.

Every endpoint is `async`. Blocking work runs in a bounded lane per kind (api/lanes.py);
long-polls wait on the event loop (api/waits.py), so neither can starve the other or
`/healthz`, which never leaves the loop.
"""

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError
from starlette.convertors import PathConvertor, register_url_convertor

from api import errors
from api.admin import admin_router
from api.auth import KeyStore
from api.bodies import BodyLimit, StrictJSONRoute
from api.errors import documented, invalid
from api.lanes import LaneFull, Lanes
from api.models import (
    AnswerResponse,
    DocumentInfo,
    Health,
    Hit,
    NotReady,
    PromptInfo,
    PromptSelector,
    ProviderInfo,
    Readiness,
    RetrieveResponse,
    request_models,
)
from api.waits import DocumentWatch
from freshrag.errors import GenerationError
from freshrag.settings import Settings
from retrieval.answer.gateway import UnknownProvider
from retrieval.answer.prompts import PromptError, PromptRegistry
from retrieval.answer.service import AnswerService
from retrieval.filters import INT64_MAX, FilterError, parse_filters
from retrieval.index import Condition, DocumentState, Index
from retrieval.search import Principal, Retriever

REQUEST_SECONDS = Histogram(
    "freshrag_api_request_seconds",
    "API latency",
    ["endpoint", "mode"],
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)

# What a doc_id can be: no control characters (events enforce the same).
DOC_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"


class _AnyPath(PathConvertor):
    """`path` that also matches newlines, so a doc_id with one gets a 422, not a 404."""

    regex = "(?s:.*)"


register_url_convertor("anypath", _AnyPath())
_DOC_ID = re.compile(DOC_ID_PATTERN)


def _doc_id(value: str) -> str:
    if not _DOC_ID.match(value):
        raise PydanticCustomError("doc_id", "doc_id must be non-empty, without control characters")
    return value


@dataclass
class Services:
    settings: Settings
    index: Index
    retriever: Retriever
    keys: KeyStore
    broker_ready: Callable[[], bool]
    answers: AnswerService | None = None
    prompts: PromptRegistry | None = None
    # Wakes GET /documents long-polls; the ingest worker calls `watch.notify(tenant, doc_id)`.
    watch: DocumentWatch | None = None
    # Operator details for /readyz from the worker of this process (e.g. lost broker state).
    ingest_status: Callable[[], dict[str, Any]] | None = None
    # Whether this process's workers are warm (children, model, group): until then the
    # first edit would wait for them, so /readyz says not ready.
    ingest_ready: Callable[[], bool] | None = None
    # The generations (index + model) this process serves: freshrag/generations/controller.py. None in
    # tests that wire one index by hand.
    deployment: Any = None


def conditions_of(filters: dict[str, Any]) -> list[Condition]:
    """Body filters → conditions, or a 422 whose `loc` names the filter."""
    try:
        return parse_filters(filters)
    except FilterError as exc:
        loc = ("body", "filters", exc.field) if exc.field else ("body", "filters")
        raise invalid(loc, str(exc)) from exc


def create_app(services: Services) -> FastAPI:
    settings = services.settings
    if services.watch is None:
        services.watch = DocumentWatch()
    watch = services.watch
    lanes = Lanes(
        settings.retrieve_concurrency,
        settings.answer_concurrency,
        settings.documents_concurrency,
        settings.lane_queue,
    )
    RetrieveRequest, AnswerRequest = request_models(settings.max_query_chars, settings.max_top_k)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        watch.bind()
        try:
            yield
        finally:
            watch.unbind()

    app = FastAPI(
        title="FreshRAG",
        version="0.1.0",
        description="Fresh, grounded context from documents that change. "
        "Authenticate with `Authorization: Bearer <key>` (or `X-API-Key: <key>`). "
        'Errors are `{"detail": "..."}`; a 422 is `{"detail": [{"loc", "msg", '
        '"type"}]}` with `loc` naming the field.',
        lifespan=lifespan,
    )
    app.router.route_class = StrictJSONRoute
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    errors.install(app)
    app.state.services = services
    app.state.watch = watch
    app.state.lanes = lanes
    principal = services.keys.dependency()

    async def generation(
        x_freshrag_generation: Annotated[
            str | None,
            Header(
                description="`standby` queries the generation being prepared by `freshrag "
                "reindex` (with its own model), to compare it before the switch; default: "
                "the serving one.",
            ),
        ] = None,
    ) -> Services:
        if x_freshrag_generation in (None, "", "serving"):
            return services
        if x_freshrag_generation != "standby":
            raise invalid(("header", "x-freshrag-generation"), "must be 'serving' or 'standby'")
        if services.deployment is None:
            raise HTTPException(409, "this server has no standby generation")
        try:
            return services.deployment.standby_stack()
        except GenerationError as exc:
            raise HTTPException(409, str(exc)) from exc

    app.include_router(admin_router(services, principal))

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        """Process up. Answers on the event loop: never waits for a thread or a lane."""
        return Health(status="ok")

    def checks() -> dict[str, bool]:
        result = {
            "broker": services.broker_ready(),
            "qdrant": services.index.ping(),
            "model": services.retriever.dense is not None,
        }
        if services.ingest_ready is not None:
            result["ingest"] = services.ingest_ready()
        return result

    @app.get(
        "/readyz",
        response_model=Readiness,
        tags=["ops"],
        responses={503: {"model": NotReady, "description": "A check failed, or probes are busy."}},
    )
    async def readyz() -> Readiness:
        def probe() -> tuple[dict[str, bool], dict[str, Any]]:
            details: dict[str, Any] = {"model": services.retriever.dense.model_name}
            if services.ingest_status:
                details["ingest"] = services.ingest_status()
            if services.deployment is not None:  # which generation serves, and the standby
                details["generations"] = services.deployment.status(public=True)
            return checks(), details

        try:
            result, details = await lanes.ready.run(probe)
        except LaneFull as exc:  # earlier probes still running: not ready to say ready
            raise HTTPException(
                503, {"ready": False, "checks": {}}, {"Retry-After": str(exc.retry_after_s)}
            ) from exc
        if not all(result.values()):
            raise HTTPException(503, {"ready": False, "checks": result, "details": details})
        return Readiness(ready=True, checks=result, details=details)

    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        tags=["ops"],
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text."}},
    )
    app.add_api_route("/metrics/", metrics, methods=["GET"], include_in_schema=False)

    @app.post(
        "/retrieve",
        response_model=RetrieveResponse,
        tags=["search"],
        responses=documented(400, 401, 409, 413, 422, 503),
    )
    async def retrieve(
        body: RetrieveRequest,
        who: Principal = Depends(principal),
        stack: Services = Depends(generation),
    ) -> RetrieveResponse:
        started = time.perf_counter()
        conditions = conditions_of(body.filters)
        retriever = stack.retriever  # read once: this index and its own model, to the end
        search = partial(retriever.retrieve, group=body.group)
        hits = await lanes.retrieve.run(search, who, body.query, body.top_k, body.mode, conditions)
        took = time.perf_counter() - started
        REQUEST_SECONDS.labels("retrieve", body.mode).observe(took)
        model = retriever.dense.model_name
        return RetrieveResponse(
            hits=[_hit(h.score, h.payload, model) for h in hits],
            mode=body.mode,
            took_ms=round(took * 1000, 3),
        )

    @app.post(
        "/answer",
        response_model=AnswerResponse,
        tags=["answers"],
        responses={
            200: {
                "content": {
                    "text/event-stream": {
                        "schema": {
                            "description": '`delta` events (data: {"text"}), then one '
                            "`done` event (data: the AnswerResponse JSON).",
                            "type": "object",
                            "properties": {
                                "event": {"type": "string", "enum": ["delta", "done"]},
                                "data": {"type": "string"},
                            },
                            "required": ["event", "data"],
                        }
                    }
                }
            },
            **documented(400, 401, 409, 413, 422, 503, 504),
        },
    )
    async def answer(
        body: AnswerRequest,
        who: Principal = Depends(principal),
        stack: Services = Depends(generation),
    ) -> Any:
        answers = stack.answers
        if answers is None or services.prompts is None:
            raise HTTPException(503, "answers are not configured on this server")
        conditions = conditions_of(body.filters)
        sel = body.prompt or PromptSelector()
        try:
            prompt = services.prompts.resolve(sel.name, sel.label, sel.version)
            result = await lanes.answer.run(
                answers.answer,
                who,
                body.query,
                body.top_k,
                body.mode,
                conditions,
                body.filters,
                prompt,
                body.cache,
                body.group,
                body.provider,
            )
        except PromptError as exc:
            raise invalid(("body", "prompt"), str(exc)) from exc
        except UnknownProvider as exc:
            raise invalid(("body", "provider"), str(exc)) from exc
        # The answer deadline (retrieval.answer.gateway.DeadlineExceeded).
        except TimeoutError as exc:
            raise HTTPException(504, str(exc) or "the answer deadline ran out") from exc
        REQUEST_SECONDS.labels("answer", body.mode).observe(result["timings"]["total_ms"] / 1000)
        payload = AnswerResponse(**result)
        if not body.stream:
            return payload
        return StreamingResponse(_sse(payload), media_type="text/event-stream")

    @app.get(
        "/prompts",
        response_model=list[PromptInfo],
        tags=["answers"],
        responses=documented(401),
    )
    async def prompts(who: Principal = Depends(principal)) -> list[PromptInfo]:
        if services.prompts is None:
            return []
        return [
            PromptInfo(
                name=p.name, version=p.version, labels=list(p.labels), description=p.description
            )
            for p in services.prompts.prompts
        ]

    @app.get(
        "/providers",
        response_model=list[ProviderInfo],
        tags=["answers"],
        responses=documented(401),
    )
    async def providers(who: Principal = Depends(principal)) -> list[ProviderInfo]:
        """The answer chain in order: what `"provider"` on /answer may name."""
        if services.answers is None:
            return []
        return [
            ProviderInfo(
                name=m.provider.name,
                kind=type(m.provider).__name__.removesuffix("Provider").lower(),
                model=str(getattr(m.provider, "model", m.provider.name)),
                circuit=m.breaker.state,
            )
            for m in services.answers.gateway.chain
        ]

    @app.get(
        "/documents/{doc_id:anypath}",
        response_model=DocumentInfo,
        tags=["documents"],
        responses=documented(401, 404, 422, 503, 504),
    )
    async def document(
        doc_id: Annotated[
            str,
            Path(
                max_length=1024,
                description="The document's id (no control characters).",
                json_schema_extra={"pattern": DOC_ID_PATTERN},
            ),
            AfterValidator(_doc_id),
        ],
        min_version: int | None = Query(
            None,
            ge=0,
            le=INT64_MAX,
            description="Wait until this version (or newer) is searchable.",
        ),
        wait: float = Query(
            10.0,
            ge=0,
            allow_inf_nan=False,
            description="Seconds to wait for min_version (capped by FRESHRAG_WAIT_MAX_SECONDS).",
        ),
        who: Principal = Depends(principal),
    ) -> DocumentInfo:
        def visible() -> DocumentState | None:
            state = services.index.get_document(who.tenant, doc_id)
            if state is not None and not set(state.acl) & set(who.groups):
                return None  # not readable by this caller: indistinguishable from absent
            return state

        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(wait, settings.wait_max_seconds)
        while True:
            with watch.watching(who.tenant, doc_id) as written:  # before reading: no lost wake-up
                state = await lanes.documents.run(visible)
                reached = state is not None and (
                    min_version is None or state.version >= min_version
                )
                remaining = deadline - loop.time()
                if reached or min_version is None or remaining <= 0:
                    break
                await watch.sleep(written, remaining)
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


async def _sse(payload: AnswerResponse) -> AsyncIterator[str]:
    """The answer text in word-group deltas, then one `done` event with citations and metadata."""
    words = payload.answer.split(" ")
    for i in range(0, len(words), 8):
        delta = " ".join(words[i : i + 8]) + (" " if i + 8 < len(words) else "")
        yield f"event: delta\ndata: {json.dumps({'text': delta})}\n\n"
    yield f"event: done\ndata: {payload.model_dump_json()}\n\n"


def _hit(score: float, p: dict[str, Any], model: str | None = None) -> Hit:
    return Hit(
        model=model,
        text=p.get("text", ""),
        score=score,
        doc_id=p["doc_id"],
        version=int(p["version"]),
        chunk_index=int(p.get("chunk_index", 0)),
        title=p.get("title"),
        source=p.get("source"),
        section=p.get("section"),
        path=p.get("path") or [],
        chunks=p.get("chunks") or [],
        event_time=p.get("event_time"),
        indexed_at=p.get("indexed_at"),
        metadata=p.get("metadata") or {},
    )
