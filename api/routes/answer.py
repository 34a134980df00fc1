"""Answers: POST /answer (a search answered by the LLM chain, with citations; JSON or
Server-Sent Events), GET /prompts and GET /providers (what a request may choose)."""

# No `from __future__ import annotations` here: the route's body type is a local of
# `build_router`, which FastAPI can resolve only as a real annotation, not as a string.

import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.sse import EventSourceResponse, format_sse_event
from pydantic import BaseModel
from starlette.background import BackgroundTask
from starlette.responses import Response

from api.bodies import StrictJSONRoute
from api.deps import Caller, LanesDep, LimiterDep, ServicesDep, StackDep
from api.errors import Problem, documented, invalid
from api.filters import conditions_of
from api.lanes import LaneFull, Lanes
from api.metrics import REQUEST_SECONDS
from api.models import (
    AnswerBody,
    AnswerDelta,
    AnswerReset,
    AnswerResponse,
    AnswerStreamError,
    PromptInfo,
    PromptSelector,
    ProviderInfo,
)
from api.ranking import stages_of
from api.services import Services
from api.usage import ATTRIBUTION, UNATTRIBUTED, Attribution, UsageLedger
from retrieval.answer.gateway import UnknownProvider
from retrieval.answer.prompts import PromptError, UnknownPrompt
from retrieval.answer.service import AnswerService, Done, Prepared
from retrieval.answer.streaming import Delta, Reset
from retrieval.search import Principal

log = logging.getLogger("freshrag.api")

# 200 is JSON, or with `"stream": true` an event stream: both documented.
ANSWER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {
            "text/event-stream": {
                "schema": {
                    "description": "Tokens as the provider generates them: `delta` events "
                    '(data: {"text"}); a `reset` (data: {"provider", "reason", "detail"}) '
                    "when a provider's answer is rejected mid-way: discard the text "
                    "received, the next provider streams; then one `done` (data: the "
                    "AnswerResponse JSON, its `answer` the deltas since the last reset) or "
                    '`error` (data: {"status", "detail"}; 504: the deadline ran out).',
                    "type": "object",
                    "properties": {
                        "event": {"type": "string", "enum": ["delta", "reset", "done", "error"]},
                        "data": {"type": "string"},
                    },
                    "required": ["event", "data"],
                }
            }
        }
    },
    **documented(400, 401, 409, 413, 422, 429, 503, 504),
    404: {
        "model": Problem,
        "description": "No prompt has the name, version or label asked for (GET /prompts).",
    },
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
        limiter: LimiterDep,
        request: Request,
    ) -> AnswerResponse | Response:
        key_id: str = request.state.key_id
        # Before any provider call: a spent daily token budget is a 429.
        limiter.check_tokens(key_id, who.name, who.tenant)
        return await respond(body, who, stack, services, lanes, key_id)

    # Their response models come from the return annotations.
    router.add_api_route("/prompts", prompts, methods=["GET"], responses=documented(401))
    router.add_api_route("/providers", providers, methods=["GET"], responses=documented(401))
    return router


async def respond(
    body: AnswerBody,
    who: Principal,
    stack: Services,
    services: Services,
    lanes: Lanes,
    key_id: str = "",
) -> AnswerResponse | Response:
    """Answers on `stack` (serving or standby) with a prompt from the serving registry;
    the answer deadline is a 504, an unknown prompt a 404, a template that does not
    render a 422. A stream's status is decided before its first event: failures after
    that are `error` events."""
    answers = stack.answers
    if answers is None or services.prompts is None:
        raise HTTPException(503, "answers are not configured on this server")
    conditions = conditions_of(body.filters)
    sel = body.prompt or PromptSelector()
    try:
        prompt = services.prompts.resolve(sel.name, sel.label, sel.version)
        # Provider calls from here on (in the lane's thread, in the stream) are this key's.
        for_whom = Attribution(who.tenant, key_id, who.name, prompt.ref)
        ATTRIBUTION.set(for_whom)
        args = (
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
            stages_of(body),
        )
        if body.stream:
            ready = await lanes.answer.run(answers.prepare, *args)
        else:
            result = await lanes.answer.run(answers.answer, *args)
    except UnknownPrompt as exc:  # a name the request may use, for nothing that exists
        raise HTTPException(404, str(exc)) from exc
    except PromptError as exc:
        raise invalid(("body", "prompt"), str(exc)) from exc
    except UnknownProvider as exc:
        raise invalid(("body", "provider"), str(exc)) from exc
    # The answer deadline (retrieval.answer.gateway.DeadlineExceeded).
    except TimeoutError as exc:
        raise HTTPException(504, str(exc) or "the answer deadline ran out") from exc
    if body.stream:
        return _event_stream(answers, ready, lanes, body.mode, services.usage, for_whom)
    _saved(services.usage, for_whom, result)
    REQUEST_SECONDS.labels("answer", body.mode).observe(result["timings"]["total_ms"] / 1000)
    return AnswerResponse(**result)


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


def _saved(ledger: UsageLedger | None, who: Attribution, result: dict[str, Any]) -> None:
    """A cache hit goes in the ledger with the tokens it saved, priced at the rates of
    the model that made the cached answer."""
    if ledger is not None and result.get("cached"):
        ledger.cache_hit(who, result.get("tokens"), str(result.get("model") or ""))


def _event_stream(
    answers: AnswerService,
    ready: Prepared,
    lanes: Lanes,
    mode: str,
    ledger: UsageLedger | None = None,
    who: Attribution = UNATTRIBUTED,
) -> Response:
    """The answer as Server-Sent Events (FastAPI's event-stream response and encoder).

    The events come from the provider as it generates; a client that disconnects cancels
    the stream and with it the provider call. The background task closes the generator
    even when the disconnect caught it between two events, so the provider's HTTP stream
    is never left to the garbage collector.
    """
    events = _events(answers, ready, lanes, mode, ledger, who)
    return EventSourceResponse(
        events,
        # As FastAPI sets them for its own event streams: no caching, no proxy buffering.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        background=BackgroundTask(events.aclose),
    )


async def _events(
    answers: AnswerService,
    ready: Prepared,
    lanes: Lanes,
    mode: str,
    ledger: UsageLedger | None,
    who: Attribution,
) -> AsyncGenerator[bytes, None]:
    stream = answers.stream(ready, lanes.answer.run)
    try:
        async with aclosing(stream):
            async for event in stream:
                if isinstance(event, Delta):
                    yield _sse("delta", AnswerDelta(text=event.text))
                elif isinstance(event, Reset):
                    reset = AnswerReset(
                        provider=event.provider, reason=event.reason, detail=event.detail
                    )
                    yield _sse("reset", reset)
                elif isinstance(event, Done):
                    total = event.result["timings"]["total_ms"]
                    REQUEST_SECONDS.labels("answer", mode).observe(total / 1000)
                    _saved(ledger, who, event.result)
                    yield _sse("done", AnswerResponse(**event.result))
    except TimeoutError as exc:  # the answer deadline
        yield _sse("error", AnswerStreamError(status=504, detail=str(exc)))
    except LaneFull as exc:
        yield _sse("error", AnswerStreamError(status=503, detail=str(exc)))
    except Exception:
        log.exception("a streamed answer failed")
        yield _sse("error", AnswerStreamError(status=500, detail="internal error"))


def _sse(event: str, data: BaseModel) -> bytes:
    """One event; its data JSON in ASCII, so no answer text can break the wire format."""
    return format_sse_event(
        event=event, data_str=json.dumps(data.model_dump(mode="json"), ensure_ascii=True)
    )
