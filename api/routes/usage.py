"""GET /usage: provider calls, tokens, cost and cache savings per tenant, key, provider and
model over a time window. An admin key sees every tenant's usage; any other key only its
own calls (scope `key`), so a team can watch its budget without an admin key."""

# No `from __future__ import annotations`: FastAPI reads the query parameters' types.

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from api.bodies import StrictJSONRoute
from api.deps import Caller, ServicesDep
from api.errors import documented, invalid
from api.models import DATE_TIME, RFC3339, UTC_OFFSET

router = APIRouter(tags=["usage"], route_class=StrictJSONRoute)

_WINDOW = "RFC 3339 date-time (e.g. `2026-12-07T00:00:00Z`); without an offset it is UTC."
# The schema says RFC 3339 (with its calendar); the server also takes a time without an
# offset as UTC, as it always did.
_INSTANT = {"format": "date-time", "pattern": RFC3339}
_READ = re.compile(f"{DATE_TIME}{UTC_OFFSET}?")
# Usage lies between these: a window reaching past them is cut to them (same totals).
_EARLIEST, _LATEST = datetime(1970, 1, 2, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)


@router.get("/usage", responses=documented(401, 403, 409, 422, 429))
async def usage(
    who: Caller,
    request: Request,
    services: ServicesDep,
    since: Annotated[
        str | None,
        Query(
            description=f"Start of the window, inclusive. {_WINDOW} Default: 24 h before "
            "`until`. Not before `until`: an empty window.",
            json_schema_extra=_INSTANT,
        ),
    ] = None,
    until: Annotated[
        str | None,
        Query(
            description=f"End of the window, exclusive. {_WINDOW} Default: now.",
            json_schema_extra=_INSTANT,
        ),
    ] = None,
    scope: Annotated[
        Literal["all", "key"] | None,
        Query(
            description="`all`: every tenant and key (admin keys only); `key`: the calling "
            "key's own calls. Default: `all` for an admin key, `key` for any other."
        ),
    ] = None,
) -> dict[str, Any]:
    """Totals overall and per tenant, key (its name and id, never the key), provider,
    model and prompt version: calls, input and output tokens (`estimated_calls`: counted by us, the server
    sent none), cost in USD from FRESHRAG_PRICES (`unpriced_calls`: a model with no
    price), cache hits and what they saved (tokens, and USD at the rates of the model that
    made the cached answer)."""
    scope = scope or ("all" if who.admin else "key")
    if scope == "all" and not who.admin:
        raise HTTPException(403, 'scope "all" needs an admin key ("admin": true)')
    end = _instant("until", until) if until is not None else datetime.now(UTC)
    start = _instant("since", since) if since is not None else end - timedelta(days=1)
    if services.usage is None:
        raise HTTPException(409, "this server keeps no usage ledger")
    only = None if scope == "all" else request.state.key_id
    totals = await run_in_threadpool(services.usage.totals, start, end, only)
    return {"since": _iso(start), "until": _iso(end), "scope": scope, **totals}


def _instant(field: str, text: str) -> datetime:
    try:
        if not _READ.fullmatch(text):  # an empty one too
            raise ValueError(text)
        at = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
    except ValueError:
        raise invalid(("query", field), f"must be an {_WINDOW}") from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    try:
        at = at.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 moved past the calendar by its offset
        return _EARLIEST if at.year < 5000 else _LATEST
    return min(max(at, _EARLIEST), _LATEST)


def _iso(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
