"""Documents over HTTP.

GET /documents/{doc_id}: what the index holds of a document, optionally after waiting (a
long-poll on the event loop, no thread) until a given version is searchable; a wait that
runs out first is a 202 saying what is indexed instead, not an error.

POST /documents and DELETE /documents/{doc_id}: publish document events (the Kafka event
contract, ingest/events.py) for keys with the publish right. The tenant is the key's; a
key grants only its own groups; a batch is checked whole before anything is sent; the
reply comes once the broker acknowledged every record. Parsing and sending run in threads,
never on the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, Field, ValidationError
from pydantic_core import PydanticCustomError
from starlette.concurrency import run_in_threadpool
from starlette.convertors import PathConvertor, register_url_convertor

from api.bodies import StrictJSONRoute, strict_loads
from api.deps import Caller, LanesDep, ProducerDep, PublishCaller, ServicesDep, WatchDep
from api.errors import SafeJSONResponse, documented, invalid
from api.event_bodies import MAX_EVENTS, body_schema, portable, precheck
from api.lanes import Lanes
from api.models import DocumentInfo, DocumentPending, QueryVersion
from api.publishing import EventProducer
from api.services import Services
from ingest.events import DEFAULT_ACL, DocumentEvent, MalformedEvent
from ingest.publisher import BrokerUnreachable, default_version
from retrieval.filters import printable
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
    if not _DOC_ID.fullmatch(value):
        raise PydanticCustomError("doc_id", "doc_id must be non-empty, without control characters")
    return value


router = APIRouter(tags=["documents"], route_class=StrictJSONRoute)


_PENDING = {
    "model": DocumentPending,
    "description": "With `min_version`: the wait ended (after `wait` seconds, capped by "
    "FRESHRAG_WAIT_MAX_SECONDS) before that version was searchable. Not an error, so "
    "monitoring does not count a producer's patience as a failure: ask again.",
}


# No docstring: FastAPI would publish it as the operation's description.
@router.get(
    "/documents/{doc_id:anypath}",
    response_model=DocumentInfo,
    responses={202: _PENDING, **documented(401, 404, 422, 503)},
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
        QueryVersion | None,
        Query(description="Wait until this version (or newer) is searchable."),
    ] = None,
    wait: Annotated[
        float,
        Query(
            ge=0,
            allow_inf_nan=False,
            description="Seconds to wait for min_version (capped by FRESHRAG_WAIT_MAX_SECONDS).",
        ),
    ] = 10.0,
) -> DocumentInfo | SafeJSONResponse:
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
        return _pending(doc_id, min_version, state)
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


def _pending(doc_id: str, min_version: int, state: DocumentState | None) -> SafeJSONResponse:
    """The 202 of a wait that ran out: what is indexed instead, as far as the key may know."""
    have = f"version {state.version}" if state else "nothing"
    pending = DocumentPending(
        doc_id=printable(doc_id),
        min_version=min_version,
        version=state.version if state else None,
        deleted=bool(state and state.deleted),
        detail=printable(
            f"version {min_version} of '{doc_id}' not indexed in time (indexed: {have})"
        ),
    )
    return SafeJSONResponse(pending.model_dump(), 202)


def _visible(services: Services, who: Principal, doc_id: str) -> DocumentState | None:
    """The registry entry, if this caller may read it: otherwise as if absent."""
    state = services.index.get_document(who.tenant, doc_id)
    if state is not None and not set(state.acl) & set(who.groups):
        return None
    return state


# --- publishing -----------------------------------------------------------------------

_MAX_ERRORS = 20
Lane = Literal["live", "backfill"]
# A doc_id as the event contract has it (stricter than what GET accepts: no leading or
# trailing whitespace, at most 512 characters).
EVENT_ID_PATTERN: str = DocumentEvent.model_json_schema()["properties"]["doc_id"]["pattern"]
_EVENT_ID = re.compile(EVENT_ID_PATTERN)


class PublishedRecord(BaseModel):
    op: Literal["upsert", "delete"]
    doc_id: str
    version: int
    partition: int = Field(description="The partition the broker wrote the event to.")
    offset: int = Field(description="Its offset in that partition.")


class Published(BaseModel):
    """The events were acknowledged by the broker (acks=all); indexing follows."""

    topic: str
    lane: Lane
    tenant: str
    records: list[PublishedRecord] = Field(description="One per event, in the request's order.")


LaneQuery = Annotated[
    Lane,
    Query(
        description="`live` (FRESHRAG_TOPIC) or `backfill` (FRESHRAG_BACKFILL_TOPIC: bulk "
        "loads, read by workers only when no live event waits)."
    ),
]


def _event_doc_id(value: str) -> str:
    if not _EVENT_ID.fullmatch(value):
        raise PydanticCustomError(
            "doc_id",
            "doc_id must be non-empty, without control characters or leading or trailing "
            "whitespace",
        )
    return value


_PUBLISH_RESPONSES = documented(401, 403, 413, 422, 429, 503)
_PUBLISH_RESPONSES[413] = {
    **_PUBLISH_RESPONSES[413],
    "description": "Request body larger than FRESHRAG_PUBLISH_MAX_BODY_BYTES.",
}
_PUBLISH_RESPONSES[403] = {
    **_PUBLISH_RESPONSES[403],
    "description": "The key has no publish right, grants a group it does not have, or "
    "would replace or delete a document it cannot read.",
}
_PUBLISH_RESPONSES[503] = {
    **_PUBLISH_RESPONSES[503],
    "description": "The broker cannot be reached or did not confirm every event in time.",
}


@router.post(
    "/documents",
    status_code=202,
    response_model=Published,
    responses=_PUBLISH_RESPONSES,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": body_schema()}},
            "description": "One document event, or a list of up to 1000, in the event "
            "contract (docs/reference/event-contract.md).",
        }
    },
)
async def publish_documents(
    request: Request,
    who: PublishCaller,
    services: ServicesDep,
    lanes: LanesDep,
    producer: ProducerDep,
    lane: LaneQuery = "live",
) -> Published:
    body = await request.body()  # already read (and size-checked) by BodyLimit
    events, single = await run_in_threadpool(
        _parse_events, body, who.tenant, producer.max_record_bytes
    )

    def field(i: int, name: str) -> str:
        return f"body.{name}" if single else f"body[{i}].{name}"

    return await _publish(events, who, services, lanes, producer, lane, field)


@router.delete(
    "/documents/{doc_id:anypath}",
    status_code=202,
    response_model=Published,
    responses={k: v for k, v in _PUBLISH_RESPONSES.items() if k != 413},
)
async def delete_document(
    doc_id: Annotated[
        str,
        Path(
            max_length=512,
            description="The document's id, as in its events.",
            json_schema_extra={"pattern": portable(EVENT_ID_PATTERN)},
        ),
        AfterValidator(_event_doc_id),
    ],
    who: PublishCaller,
    services: ServicesDep,
    lanes: LanesDep,
    producer: ProducerDep,
    version: Annotated[
        QueryVersion | None,
        Query(
            description="The delete's version; it wins only over older versions. Default: "
            "milliseconds since the epoch, as `freshrag publish --delete` (pass your own "
            "when your producers number versions themselves).",
        ),
    ] = None,
    lane: LaneQuery = "live",
) -> Published:
    try:
        event = DocumentEvent(
            op="delete",
            doc_id=doc_id,
            version=default_version() if version is None else version,
            tenant=who.tenant,
        )
    except ValidationError as exc:  # the path is checked as events are: not expected
        raise invalid(("path", "doc_id"), str(exc.errors()[0]["msg"])) from exc
    return await _publish(
        [(event, event.to_bytes())], who, services, lanes, producer, lane, lambda _, name: name
    )


def _parse_events(
    body: bytes, tenant: str, max_record_bytes: int
) -> tuple[list[tuple[DocumentEvent, bytes]], bool]:
    """Every event of the body, checked (a 422 naming each bad field, nothing sent), with
    the tenant of the key and its Kafka value; and whether the body was one event rather
    than a list. Runs in a thread: bodies can be large."""
    if not body.strip():
        raise invalid(("body",), "send a document event, or a list of them", "missing")
    raw = strict_loads(body)
    single = isinstance(raw, dict)
    if not single and not isinstance(raw, list):
        raise invalid(("body",), "must be a document event (an object) or a list of them")
    items: list[Any] = [raw] if single else raw
    if not items:
        raise invalid(("body",), "the list is empty: send at least one event", "too_short")
    if len(items) > MAX_EVENTS:
        raise invalid(("body",), f"at most {MAX_EVENTS} events per request", "too_long")
    errors: list[dict[str, Any]] = []
    events: list[tuple[DocumentEvent, bytes]] = []
    for i, item in enumerate(items):
        at: tuple[str | int, ...] = ("body",) if single else ("body", i)
        if isinstance(item, dict) and "tenant" in item and item["tenant"] != tenant:
            errors.append(
                {
                    "loc": (*at, "tenant"),
                    "msg": f"must be this key's tenant '{tenant}', or left out",
                    "type": "tenant",
                }
            )
            continue
        item, problems = precheck(item)
        if problems:
            errors.extend({"loc": (*at, f), "msg": m, "type": t} for f, m, t in problems)
            continue
        try:
            event = DocumentEvent.model_validate(
                {**item, "tenant": tenant} if isinstance(item, dict) else item
            )
            event.binary_body()
        except ValidationError as exc:
            errors.extend(
                {"loc": (*at, *e["loc"]), "msg": e["msg"], "type": e["type"]}
                for e in exc.errors(include_url=False)
            )
            continue
        except MalformedEvent as exc:
            errors.append({"loc": (*at, "content_base64"), "msg": str(exc), "type": "base64"})
            continue
        value = event.to_bytes()
        size = len(event.key()) + len(value)
        if size > max_record_bytes:
            errors.append(
                {
                    "loc": at,
                    "msg": f"the event is {size} bytes as a Kafka record; the largest this "
                    f"server sends is {max_record_bytes} (FRESHRAG_MAX_EVENT_BYTES less "
                    "the record overhead)",
                    "type": "too_large",
                }
            )
            continue
        events.append((event, value))
    if errors:
        raise RequestValidationError(errors[:_MAX_ERRORS])
    return events, single


# Names an event's field in a 403: `body[3].acl`, or the path's `doc_id`.
FieldName = Callable[[int, str], str]


def _grant_problem(
    events: Sequence[tuple[DocumentEvent, bytes]], who: Principal, field: FieldName
) -> str | None:
    """Why the key may not publish these events' `acl`, if it may not: a key grants only
    groups it has itself (or it could write what it cannot read)."""
    mine = set(who.groups)
    for i, (event, _) in enumerate(events):
        if event.acl is None and event.op == "delete":
            continue  # a delete keeps the deleted document's groups
        granted = event.acl if event.acl is not None else list(DEFAULT_ACL)
        if not set(granted) <= mine:
            absent = ' (left out, it is ["public"])' if event.acl is None else ""
            return (
                f"{field(i, 'acl')}{absent}: a key may grant only its own groups "
                f"({', '.join(who.groups) or 'none'}); it cannot publish what it could not read"
            )
    return None


def _overwrite_problem(
    services: Services,
    events: Sequence[tuple[DocumentEvent, bytes]],
    who: Principal,
    field: FieldName,
) -> str | None:
    """Why the key may not replace or delete an indexed document, if it may not: one it
    cannot read (checked against what is indexed now; in a registry read thread)."""
    mine = set(who.groups)
    keys = list(dict.fromkeys((who.tenant, e.doc_id) for e, _ in events))
    indexed = services.index.get_documents(keys)
    for i, (event, _) in enumerate(events):
        state = indexed.get((who.tenant, event.doc_id))
        if state is not None and not state.deleted and not set(state.acl) & mine:
            return (
                f"{field(i, 'doc_id')}: this document is indexed for groups this "
                "key cannot read; it may not be replaced or deleted with this key"
            )
    return None


async def _publish(
    events: list[tuple[DocumentEvent, bytes]],
    who: Principal,
    services: Services,
    lanes: Lanes,
    producer: EventProducer,
    lane: Lane,
    field: FieldName,
) -> Published:
    problem = _grant_problem(events, who, field)
    problem = problem or await lanes.documents.run(_overwrite_problem, services, events, who, field)
    if problem:
        raise HTTPException(403, problem)
    settings = services.settings
    topic = settings.backfill_topic if lane == "backfill" else settings.topic
    records = [(event.key(), value) for event, value in events]
    try:
        acked = await run_in_threadpool(producer.send, topic, records)
    except BrokerUnreachable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from exc
    return Published(
        topic=topic,
        lane=lane,
        tenant=who.tenant,
        records=[
            PublishedRecord(
                op=event.op,
                doc_id=event.doc_id,
                version=event.version,
                partition=partition,
                offset=offset,
            )
            for (event, _), (partition, offset) in zip(events, acked, strict=True)
        ],
    )
