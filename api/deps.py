"""FastAPI dependencies: the services, lanes and watch of the app serving a request, and
who is asking.

create_app keeps them on `app.state`; routes ask for them by type (`who: Caller`,
`services: ServicesDep`), so a route holds no reference that a blue/green switch could
leave stale. Every dependency is `async`: a sync one would take a thread per request.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Header, HTTPException, Request, Security
from fastapi.security import HTTPAuthorizationCredentials

from api.auth import API_KEY, BEARER, may_publish
from api.lanes import Lanes
from api.limits import Limiter
from api.publishing import EventProducer
from api.services import Services
from api.waits import DocumentWatch
from freshrag import spans
from freshrag.errors import GenerationError
from retrieval.search import Principal


async def get_services(request: Request) -> Services:
    """The serving generation's services (a switch swaps their fields in place)."""
    services: Services = request.app.state.services
    return services


async def get_lanes(request: Request) -> Lanes:
    """The bounded thread lanes blocking work runs in (api/lanes.py)."""
    lanes: Lanes = request.app.state.lanes
    return lanes


async def get_watch(request: Request) -> DocumentWatch:
    """The wake-ups GET /documents long-polls sleep on (api/waits.py)."""
    watch: DocumentWatch = request.app.state.watch
    return watch


ServicesDep = Annotated[Services, Depends(get_services)]
LanesDep = Annotated[Lanes, Depends(get_lanes)]
WatchDep = Annotated[DocumentWatch, Depends(get_watch)]


async def authenticated(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    api_key: Annotated[str | None, Security(API_KEY)],
) -> Principal:
    """The caller's principal from either header (both schemes are documented in OpenAPI),
    once its key and tenant are within their request rate."""
    services: Services = request.app.state.services
    token = bearer.credentials.strip() if bearer else None
    with spans.span("auth") as span:  # a 401 or 429 leaves it failed
        who = services.keys.resolve(token, api_key, request.headers.get("authorization", ""))
        key_id = services.keys.key_id(api_key or token)
        request.state.key_id = key_id
        if span.is_recording():  # the key's id (a hash prefix), never the key
            span.set_attributes({"freshrag.tenant": who.tenant, "freshrag.key_id": key_id})
        # Requests per second of the key and its tenant, before any work (a 429 otherwise).
        limiter: Limiter = request.app.state.limiter
        limiter.admit(key_id, who.name, who.tenant)
    return who


Caller = Annotated[Principal, Depends(authenticated)]


async def limiter_of(request: Request) -> Limiter:
    """The rate limits and token budgets of this app's keys (api/limits.py)."""
    limiter: Limiter = request.app.state.limiter
    return limiter


LimiterDep = Annotated[Limiter, Depends(limiter_of)]


async def administrator(who: Caller) -> Principal:
    """The caller, if its key may run operator actions; 403 otherwise."""
    if not who.admin:
        raise HTTPException(403, 'an admin key is needed for this ("admin": true)')
    return who


AdminCaller = Annotated[Principal, Depends(administrator)]


async def generation(
    services: ServicesDep,
    x_freshrag_generation: Annotated[
        Literal["serving", "standby"],
        Header(
            description="`standby` queries the generation being prepared by `freshrag "
            "reindex` (with its own model), to compare it before the switch; default: "
            "`serving`. Any other value is a 422.",
        ),
    ] = "serving",
) -> Services:
    """The services a search runs on: the serving generation's, or the standby's. The
    header's values are an enum in OpenAPI, so FastAPI refuses what the document does."""
    if x_freshrag_generation == "serving":
        return services
    if services.deployment is None:
        raise HTTPException(409, "this server has no standby generation")
    try:
        return services.deployment.standby_stack()
    except GenerationError as exc:
        raise HTTPException(409, str(exc)) from exc


StackDep = Annotated[Services, Depends(generation)]


async def publisher(who: Caller) -> Principal:
    """The caller, if its key may publish; 403 otherwise."""
    if not may_publish(who):
        raise HTTPException(
            403, 'this key may not publish documents: it needs the publish right ("publish": true)'
        )
    return who


async def get_producer(request: Request) -> EventProducer:
    """The app's producer (api/publishing.py), connected on its first use."""
    producer: EventProducer = request.app.state.producer
    return producer


PublishCaller = Annotated[Principal, Depends(publisher)]
ProducerDep = Annotated[EventProducer, Depends(get_producer)]
