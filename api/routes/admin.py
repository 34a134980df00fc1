"""Operator actions over HTTP: index generations (`freshrag reindex` is a client of these).

In embedded mode the service owns the Edge shards, so a migration must run inside it;
with a Qdrant server the same endpoints keep one way of doing it. Admin keys only
(`"admin": true` in the keys file); they never widen what a key can read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from api.bodies import StrictJSONRoute
from api.deps import AdminCaller, ServicesDep
from api.errors import documented, invalid
from api.models import ReindexRequest, SwitchRequest
from api.services import Deployment, Services
from freshrag.errors import GenerationError

router = APIRouter(prefix="/admin", tags=["admin"], route_class=StrictJSONRoute)


@router.get("/generations", responses=documented(401, 403, 409))
async def status(_: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    """The serving generation and the standby (its copy's progress, its lag)."""
    return _deployment(services).status()


@router.post("/generations", status_code=202, responses=documented(401, 403, 409, 422))
async def start(body: ReindexRequest, _: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    """Builds a standby generation for `model` from the stored chunks while the
    serving one keeps serving; events reach both from then on."""
    dep = _deployment(services)
    try:
        return await _run(dep.reindex, body.model)
    except ValueError as exc:
        raise invalid(("body", "model"), str(exc)) from exc


@router.post("/generations/switch", responses=documented(401, 403, 409, 422))
async def switch(
    _: AdminCaller, services: ServicesDep, body: SwitchRequest | None = None
) -> dict[str, Any]:
    """The standby serves from the next request; the old one stays current (switch
    again to go back) until it is dropped."""
    return await _run(_deployment(services).switch, bool(body and body.force))


@router.delete("/generations/standby", responses=documented(401, 403, 409))
async def drop(_: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    """Stops and deletes the standby generation (an unwanted build, or the old one)."""
    return await _run(_deployment(services).drop_standby)


def _deployment(services: Services) -> Deployment:
    """Checked in the endpoint, not as a dependency: a bad body is a 422 before this 409."""
    if services.deployment is None:
        raise HTTPException(409, "this server does not manage index generations")
    return services.deployment


async def _run(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
    """A blocking generation call in a worker thread; GenerationError becomes a 409."""
    try:
        return await run_in_threadpool(fn, *args)
    except GenerationError as exc:
        raise HTTPException(409, str(exc)) from exc
