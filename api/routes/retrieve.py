"""POST /retrieve: the caller's best-matching sections (or chunks), found in the
retrieve lane, on the serving generation or (X-Freshrag-Generation) the standby."""

# No `from __future__ import annotations` here: the route's body type is a local of
# `build_router`, which FastAPI can resolve only as a real annotation, not as a string.

import time
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from api.bodies import StrictJSONRoute
from api.deps import Caller, LanesDep, LimiterDep, StackDep
from api.errors import documented
from api.filters import conditions_of
from api.lanes import Lanes
from api.metrics import REQUEST_SECONDS
from api.models import Hit, RetrieveResponse, SearchBody
from api.ranking import stages_of
from api.services import Services
from api.usage import ATTRIBUTION, Attribution
from retrieval.search import Principal
from retrieval.stages import Stages


def build_router(request_model: type[BaseModel]) -> APIRouter:
    """The /retrieve route for `request_model`, built per app: it carries the limits
    (query length, top_k) this server enforces and documents."""
    router = APIRouter(tags=["search"], route_class=StrictJSONRoute)

    @router.post(
        "/retrieve",
        response_model=RetrieveResponse,
        responses=documented(400, 401, 409, 413, 422, 429, 503),
    )
    async def retrieve(
        body: request_model,  # type: ignore[valid-type]
        who: Caller,
        stack: StackDep,
        lanes: LanesDep,
        limiter: LimiterDep,
        request: Request,
    ) -> RetrieveResponse:
        stages = stages_of(body)
        if stack.retriever.ranking.for_request(stages).rerank and _llm(stack):
            # An LLM rerank is a provider call: budgeted before, billed to this key.
            key_id: str = request.state.key_id
            limiter.check_tokens(key_id, who.name, who.tenant)
            ATTRIBUTION.set(Attribution(who.tenant, key_id, who.name, "rerank"))
        return await search(body, who, stack, lanes, stages)

    return router


def _llm(stack: Services) -> bool:
    reranker = stack.retriever.reranker
    return reranker is not None and reranker.name == "llm"


async def search(
    body: SearchBody, who: Principal, stack: Services, lanes: Lanes, stages: Stages | None = None
) -> RetrieveResponse:
    """Runs the search in the retrieve lane and times it (per mode); `stages`: the
    request's ranking choices (an LLM rerank has FRESHRAG_RERANK_TIMEOUT_S)."""
    started = time.perf_counter()
    conditions = conditions_of(body.filters)
    retriever = stack.retriever  # read once: this index and its own model, to the end
    timings: dict[str, float] = {}
    run = partial(retriever.retrieve, group=body.group, stages=stages, timings=timings)
    hits = await lanes.retrieve.run(run, who, body.query, body.top_k, body.mode, conditions)
    took = time.perf_counter() - started
    REQUEST_SECONDS.labels("retrieve", body.mode).observe(took)
    model = retriever.dense.model_name
    return RetrieveResponse(
        hits=[_hit(h.score, h.payload, model) for h in hits],
        mode=body.mode,
        took_ms=round(took * 1000, 3),
        timings=timings,
    )


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
