"""GET /documents/{doc_id}: what the index holds of a document, optionally after waiting
(a long-poll on the event loop, no thread) until a given version is searchable."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query
from pydantic import AfterValidator
from pydantic_core import PydanticCustomError
from starlette.convertors import PathConvertor, register_url_convertor

from api.bodies import StrictJSONRoute
from api.deps import Caller, LanesDep, ServicesDep, WatchDep
from api.errors import documented
from api.models import DocumentInfo
from api.services import Services
from retrieval.filters import INT64_MAX
from retrieval.search import Principal
from retrieval.store.types import DocumentState

# What a doc_id can be: no control characters (events enforce the same).
DOC_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
_DOC_ID = re.compile(DOC_ID_PATTERN)


class _AnyPath(PathConvertor):
    """`path` that also matches newlines, so a doc_id with one gets a 422, not a 404."""

    regex = "(?s:.*)"


register_url_convertor("anypath", _AnyPath())


def _doc_id(value: str) -> str:
    if not _DOC_ID.match(value):
        raise PydanticCustomError("doc_id", "doc_id must be non-empty, without control characters")
    return value


router = APIRouter(tags=["documents"], route_class=StrictJSONRoute)


# No docstring: FastAPI would publish it as the operation's description.
@router.get(
    "/documents/{doc_id:anypath}",
    response_model=DocumentInfo,
    responses=documented(401, 404, 422, 503, 504),
)
async def document(
    doc_id: Annotated[
        str,
        Path(
            max_length=1024,
            description="The document's id (no control characters).",
            json_schema_extra={"pattern": DOC_ID_PATTERN},
        ),
        AfterValidator(_doc_id),
    ],
    who: Caller,
    services: ServicesDep,
    lanes: LanesDep,
    watch: WatchDep,
    min_version: Annotated[
        int | None,
        Query(ge=0, le=INT64_MAX, description="Wait until this version (or newer) is searchable."),
    ] = None,
    wait: Annotated[
        float,
        Query(
            ge=0,
            allow_inf_nan=False,
            description="Seconds to wait for min_version (capped by FRESHRAG_WAIT_MAX_SECONDS).",
        ),
    ] = 10.0,
) -> DocumentInfo:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(wait, services.settings.wait_max_seconds)
    while True:
        with watch.watching(who.tenant, doc_id) as written:  # before reading: no lost wake-up
            state = await lanes.documents.run(_visible, services, who, doc_id)
            reached = state is not None and (min_version is None or state.version >= min_version)
            remaining = deadline - loop.time()
            if reached or min_version is None or remaining <= 0:
                break
            await watch.sleep(written, remaining)
    if min_version is not None and not reached:
        have = f"version {state.version}" if state else "nothing"
        raise HTTPException(
            504, f"version {min_version} of '{doc_id}' not indexed in time (indexed: {have})"
        )
    if state is None:
        raise HTTPException(404, f"document '{doc_id}' is not indexed")
    if state.deleted:
        raise HTTPException(404, f"document '{doc_id}' was deleted at version {state.version}")
    return DocumentInfo(
        doc_id=state.doc_id,
        version=state.version,
        chunk_count=state.chunk_count,
        indexed_at=state.indexed_at,
        event_time=state.event_time,
        title=state.title,
        source=state.source,
    )


def _visible(services: Services, who: Principal, doc_id: str) -> DocumentState | None:
    """The registry entry, if this caller may read it: otherwise as if absent."""
    state = services.index.get_document(who.tenant, doc_id)
    if state is not None and not set(state.acl) & set(who.groups):
        return None
    return state
