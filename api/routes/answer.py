"""Answers: POST /answer (a search answered by the LLM chain, with citations; JSON or
Server-Sent Events), GET /prompts and GET /providers (what a request may choose)."""

# No `from __future__ import annotations` here: the route's body type is a local of
# `build_router`, which FastAPI can resolve only as a real annotation, not as a string.

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from api.bodies import StrictJSONRoute
from api.deps import Caller, LanesDep, ServicesDep, StackDep
from api.errors import documented, invalid
from api.filters import conditions_of
from api.lanes import Lanes
from api.metrics import REQUEST_SECONDS
from api.models import AnswerBody, AnswerResponse, PromptInfo, PromptSelector, ProviderInfo
from api.services import Services
from retrieval.answer.gateway import UnknownProvider
from retrieval.answer.prompts import PromptError
from retrieval.search import Principal

# 200 is JSON, or with `"stream": true` an event stream: both documented.
ANSWER_RESPONSES: dict[int | str, dict[str, Any]] = {
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
}


def build_router(request_model: type[BaseModel]) -> APIRouter:
    """The answer routes, /answer's body `request_model` built per app: it carries the
    limits (query length, top_k) this server enforces and documents."""
    router = APIRouter(tags=["answers"], route_class=StrictJSONRoute)

    @router.post("/answer", response_model=AnswerResponse, responses=ANSWER_RESPONSES)
    async def answer(
        body: request_model,  # type: ignore[valid-type]
        who: Caller,
        stack: StackDep,
        services: ServicesDep,
        lanes: LanesDep,
    ) -> AnswerResponse | StreamingResponse:
        return await respond(body, who, stack, services, lanes)

    # Their response models come from the return annotations.
    router.add_api_route("/prompts", prompts, methods=["GET"], responses=documented(401))
    router.add_api_route("/providers", providers, methods=["GET"], responses=documented(401))
    return router


async def respond(
    body: AnswerBody, who: Principal, stack: Services, services: Services, lanes: Lanes
) -> AnswerResponse | StreamingResponse:
    """Answers on `stack` (serving or standby) with a prompt from the serving registry;
    the answer deadline is a 504, an unknown prompt or provider a 422."""
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


# No docstring on `prompts`: FastAPI would publish it as the operation's description.
async def prompts(who: Caller, services: ServicesDep) -> list[PromptInfo]:
    if services.prompts is None:
        return []
    return [
        PromptInfo(name=p.name, version=p.version, labels=list(p.labels), description=p.description)
        for p in services.prompts.prompts
    ]


async def providers(who: Caller, services: ServicesDep) -> list[ProviderInfo]:
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


async def _sse(payload: AnswerResponse) -> AsyncIterator[str]:
    """The answer text in word-group deltas, then one `done` event with citations and metadata."""
    words = payload.answer.split(" ")
    for i in range(0, len(words), 8):
        delta = " ".join(words[i : i + 8]) + (" " if i + 8 < len(words) else "")
        yield f"event: delta\ndata: {json.dumps({'text': delta})}\n\n"
    yield f"event: done\ndata: {payload.model_dump_json()}\n\n"
