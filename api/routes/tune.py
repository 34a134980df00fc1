"""`freshrag tune` over HTTP: start a corpus adaptation of the embedding model, follow it,
cancel it. Admin keys only: the model it makes serves every tenant once an admin
switches to it (`freshrag reindex --model`), so starting one is an operator's act too;
`tenant` narrows what it learns from.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from starlette.concurrency import run_in_threadpool

from api.bodies import StrictJSONRoute
from api.deps import AdminCaller, ServicesDep
from api.errors import documented
from api.models import TuneRequest
from api.services import Services, Tuner
from freshrag.errors import TuneError

router = APIRouter(prefix="/admin/tune", tags=["admin"], route_class=StrictJSONRoute)


@router.post("", status_code=202, responses=documented(401, 403, 409, 422))
async def start(
    _: AdminCaller, services: ServicesDep, body: TuneRequest | None = None
) -> dict[str, Any]:
    """Mines training pairs from the indexed chunks (of `tenant`, or every tenant) and
    starts training in a niced process; 409 while one runs or when the index is too small
    to learn from. Follow it with GET."""
    body = body or TuneRequest()
    try:
        return await run_in_threadpool(
            _tuner(services).start, body.tenant, body.steps, body.max_seconds
        )
    except TuneError as exc:
        raise HTTPException(409, str(exc)) from exc


@router.get("", responses=documented(401, 403, 409))
async def status(_: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    """The running or last tune: state, step of steps, seconds, pairs, and the model folder
    once done."""
    return _tuner(services).status()


@router.delete("", responses=documented(401, 403, 409))
async def cancel(_: AdminCaller, services: ServicesDep) -> dict[str, Any]:
    """Stops a running tune; nothing of it is kept."""
    return await run_in_threadpool(_tuner(services).cancel)


def _tuner(services: Services) -> Tuner:
    if services.tuner is None:
        raise HTTPException(409, "this server does not run tunes")
    return services.tuner
