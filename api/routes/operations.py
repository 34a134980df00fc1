"""Operations: /healthz (the process is up), /readyz (it can serve), /metrics (Prometheus).

No API key: probes and scrapers run inside the deployment. /healthz never leaves the
event loop, so it answers even while every lane is busy.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.bodies import StrictJSONRoute
from api.deps import LanesDep, ServicesDep
from api.lanes import LaneFull
from api.models import Health, NotReady, Readiness
from api.services import Services

router = APIRouter(tags=["ops"], route_class=StrictJSONRoute)


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """Process up. Answers on the event loop: never waits for a thread or a lane."""
    return Health(status="ok")


# No docstrings on the endpoints below: FastAPI would publish them as descriptions.
@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": NotReady, "description": "A check failed, or probes are busy."}},
)
async def readyz(services: ServicesDep, lanes: LanesDep) -> Readiness:
    try:
        result, details = await lanes.ready.run(_probe, services)
    except LaneFull as exc:  # earlier probes still running: not ready to say ready
        raise HTTPException(
            503, {"ready": False, "checks": {}}, {"Retry-After": str(exc.retry_after_s)}
        ) from exc
    if not all(result.values()):
        raise HTTPException(503, {"ready": False, "checks": result, "details": details})
    return Readiness(ready=True, checks=result, details=details)


def _probe(services: Services) -> tuple[dict[str, bool], dict[str, Any]]:
    """The checks and what an operator should know; blocking, so it runs in a lane."""
    details: dict[str, Any] = {"model": services.retriever.dense.model_name}
    if services.ingest_status:
        details["ingest"] = services.ingest_status()
    if services.deployment is not None:  # which generation serves, and the standby
        details["generations"] = services.deployment.status(public=True)
    return _checks(services), details


def _checks(services: Services) -> dict[str, bool]:
    result = {
        "broker": services.broker_ready(),
        "qdrant": services.index.ping(),
        "model": services.retriever.dense is not None,
    }
    if services.ingest_ready is not None:
        result["ingest"] = services.ingest_ready()
    return result


async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


router.add_api_route(
    "/metrics",
    metrics,
    methods=["GET"],
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text."}},
)
router.add_api_route("/metrics/", metrics, methods=["GET"], include_in_schema=False)
