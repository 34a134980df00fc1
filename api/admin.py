"""Operator actions over HTTP: index generations (`freshrag reindex` is a client of these).

In embedded mode the service owns the Edge shards, so a migration must run inside it;
with a Qdrant server the same endpoints keep one way of doing it. Admin keys only
(`"admin": true` in the keys file); they never widen what a key can read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.bodies import StrictJSONRoute
from api.errors import documented, invalid
from freshrag.errors import GenerationError
from retrieval.search import Principal


class ReindexRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        min_length=1,
        max_length=1000,
        description="sentence-transformers model name or path, loadable offline on the server.",
    )


class SwitchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: bool = Field(
        False, description="Switch even if the standby still has events to apply (lag > 0)."
    )


def admin_router(services: Any, principal: Callable[..., Awaitable[Principal]]) -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["admin"], route_class=StrictJSONRoute)

    async def admin(who: Principal = Depends(principal)) -> Principal:
        if not who.admin:
            raise HTTPException(403, 'an admin key is needed for this ("admin": true)')
        return who

    def deployment() -> Any:
        if services.deployment is None:
            raise HTTPException(409, "this server does not manage index generations")
        return services.deployment

    async def run(fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        try:
            return await run_in_threadpool(fn, *args)
        except GenerationError as exc:
            raise HTTPException(409, str(exc)) from exc

    @router.get("/generations", responses=documented(401, 403, 409))
    async def status(_: Principal = Depends(admin)) -> dict[str, Any]:
        """The serving generation and the standby (its copy's progress, its lag)."""
        return deployment().status()

    @router.post("/generations", status_code=202, responses=documented(401, 403, 409, 422))
    async def start(body: ReindexRequest, _: Principal = Depends(admin)) -> dict[str, Any]:
        """Builds a standby generation for `model` from the stored chunks while the
        serving one keeps serving; events reach both from then on."""
        dep = deployment()
        try:
            return await run(dep.reindex, body.model)
        except ValueError as exc:
            raise invalid(("body", "model"), str(exc)) from exc

    @router.post("/generations/switch", responses=documented(401, 403, 409, 422))
    async def switch(
        body: SwitchRequest | None = None, _: Principal = Depends(admin)
    ) -> dict[str, Any]:
        """The standby serves from the next request; the old one stays current (switch
        again to go back) until it is dropped."""
        return await run(deployment().switch, bool(body and body.force))

    @router.delete("/generations/standby", responses=documented(401, 403, 409))
    async def drop(_: Principal = Depends(admin)) -> dict[str, Any]:
        """Stops and deletes the standby generation (an unwanted build, or the old one)."""
        return await run(deployment().drop_standby)

    return router
