"""The HTTP app: middleware, error handlers and one router per domain (api/routes/):
retrieve, answer (and /prompts, /providers), documents (read and publish), admin,
operations (/healthz, /readyz, /metrics); /docs and /openapi.json come with FastAPI.

Every endpoint is `async`. Blocking work runs in a bounded lane per kind (api/lanes.py);
long-polls wait on the event loop (api/waits.py), so neither can starve the other or
`/healthz`, which never leaves the loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from api import errors, openapi
from api.bodies import BodyLimit
from api.lanes import Lanes
from api.models import request_models
from api.publishing import EventProducer
from api.routes import admin, answer, documents, operations, retrieve, tune, usage
from api.services import Services
from api.tracing import telemetry_config
from api.waits import DocumentWatch

__all__ = ["Services", "create_app"]

DESCRIPTION = (
    "Fresh, grounded context from documents that change. "
    "Authenticate with `Authorization: Bearer <key>` (or `X-API-Key: <key>`). "
    'Errors are `{"detail": "..."}`; a 422 is `{"detail": [{"loc", "msg", '
    '"type"}]}` with `loc` naming the field.'
)


def create_app(services: Services) -> FastAPI:
    """The API over `services`; routes reach them (and the lanes) through api/deps.py."""
    settings = services.settings
    if services.watch is None:
        services.watch = DocumentWatch()
    app = FastAPI(
        title="FreshRAG",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=_lifespan,
        telemetry=telemetry_config(),  # request spans, when this process traces
    )
    app.add_middleware(
        BodyLimit,
        max_bytes=settings.max_request_bytes,
        overrides={("POST", "/documents"): settings.publish_max_body_bytes},
    )
    errors.install(app)
    openapi.install(app)  # parameters as they are on the wire: no JSON null
    app.state.services = services
    app.state.watch = services.watch
    app.state.lanes = Lanes(
        settings.retrieve_concurrency,
        settings.answer_concurrency,
        settings.documents_concurrency,
        settings.lane_queue,
    )
    app.state.limiter = limiter = services.keys.limiter()
    # POST/DELETE /documents: one producer for the app, connected on the first publish.
    app.state.producer = EventProducer(settings.kafka_bootstrap_servers, settings.max_event_bytes)
    if services.usage is not None and limiter.budgets:
        # Tokens spent count against daily budgets; today's so far survive a restart.
        services.usage.listeners.append(limiter.spent)
        for key, tenant, tokens in services.usage.tokens_on(datetime.now(UTC)):
            limiter.spent(key, tenant, tokens)
    # Built per app: the request models carry this server's limits and answer providers
    # into the OpenAPI document.
    retrieve_request, answer_request = request_models(
        settings.max_query_chars,
        settings.max_top_k,
        [spec.name or spec.kind for spec in settings.llm_chain],  # as build_gateway names them
        reranker=getattr(services.retriever, "reranker", None) is not None,
    )
    app.include_router(admin.router)
    app.include_router(tune.router)
    app.include_router(operations.router)
    app.include_router(retrieve.build_router(retrieve_request))
    app.include_router(answer.build_router(answer_request))
    app.include_router(documents.router)
    app.include_router(usage.router)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Long-polls sleep on the serving loop: the watch is bound to it while the app runs.
    The publishing producer is closed at the end."""
    watch: DocumentWatch = app.state.watch
    watch.bind()
    try:
        yield
    finally:
        watch.unbind()
        producer: EventProducer = app.state.producer
        await run_in_threadpool(producer.close)  # flushes what is in flight
