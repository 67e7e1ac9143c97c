"""The log as a product: a conversation's events (or everyone's) as a paged JSON list
for audit, or as Server-Sent Events (history from a position, then live)."""

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from api import validation
from api.auth import Caller, require_admin
from api.errors import invalid, not_found
from api.routes.conversations import list_object
from api.services import Svc
from api.tenancy import check_owner, conversation_not_found
from events.asyncapi import asyncapi_schema
from events.connection import cancel_for_sure
from events.history import History, StoredEvent

router = APIRouter(prefix="/v1", tags=["events"])
HEARTBEAT = 15.0
MAX_POSITION = 2**63 - 1  # JetStream sequences are uint64; beyond int64 NATS refuses them


def wants_stream(request: Request, stream: bool | None) -> bool:
    return bool(stream) or "text/event-stream" in request.headers.get("accept", "")


def start_position(request: Request, after: int | None) -> int:
    """`after`, else the SSE reconnect header `Last-Event-ID`, else the beginning."""
    if after is not None:
        return after
    last = request.headers.get("last-event-id")
    if last is None:
        return 0
    if not last.isdigit() or int(last) > MAX_POSITION:
        raise invalid("Invalid 'Last-Event-ID': expected a log position.", "Last-Event-ID")
    return int(last)


def sse(event: StoredEvent) -> bytes:
    body = event.public()
    kind = body.get("type", "event")
    return f"id: {event.seq}\nevent: {kind}\ndata: {json.dumps(body)}\n\n".encode()


async def stream(history: History, conversation_id: str | None, after: int) -> AsyncIterator[bytes]:
    """SSE frames; a comment line every HEARTBEAT seconds keeps proxies from hanging up."""
    queue: asyncio.Queue[StoredEvent] = asyncio.Queue(maxsize=1024)

    async def pump() -> None:
        async for event in history.follow(conversation_id, after):
            await queue.put(event)

    task = asyncio.create_task(pump())
    try:
        yield b": connected\n\n"
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), HEARTBEAT)
            except TimeoutError:
                if task.done():
                    task.result()  # surface why the follow ended
                yield b": keep-alive\n\n"
                continue
            yield sse(event)
    finally:
        await cancel_for_sure(task)


async def events_response(
    svc: Svc,
    request: Request,
    conversation_id: str | None,
    after: int | None,
    limit: int | None,
    order: str | None,
    stream_: bool | None,
) -> StreamingResponse | dict[str, object]:
    if after is not None and not 0 <= after <= MAX_POSITION:
        raise invalid(f"Invalid 'after': expected a log position 0..{MAX_POSITION}.", "after")
    history = History(svc.store)
    if wants_stream(request, stream_):
        frames = stream(history, conversation_id, start_position(request, after))
        return StreamingResponse(
            frames,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    limit_, order_ = validation.page(limit, order or "asc")
    page, has_more = await history.page(conversation_id, after, limit_, order_)
    data = [e.public() for e in page]
    body = list_object(data, has_more)
    body["first_id"], body["last_id"] = (data[0]["seq"], data[-1]["seq"]) if data else (None, None)
    return body


@router.get("/conversations/{conversation_id}/events", response_model=None)
async def conversation_events(
    svc: Svc,
    caller: Caller,
    conversation_id: str,
    request: Request,
    after: int | None = Query(None, description="log position; list and stream start after it"),
    limit: int | None = Query(None),
    order: str | None = Query(None, description="asc (default) or desc"),
    stream_: bool | None = Query(None, alias="stream"),
) -> StreamingResponse | dict[str, object]:
    """Every event of a conversation, deleted ones included, even after it was deleted.
    Only the owner tenant's keys see them, and admin keys (the audit view across tenants)."""
    conversation_id = validation.thread_id(conversation_id)
    head = await svc.store.head(conversation_id)
    if head is None:
        raise not_found(conversation_not_found(conversation_id))
    if not caller.is_admin:
        await check_owner(svc.store, caller, conversation_id, head)
    return await events_response(svc, request, conversation_id, after, limit, order, stream_)


@router.get("/events", response_model=None)
async def all_events(
    svc: Svc,
    caller: Caller,
    request: Request,
    after: int | None = Query(None),
    limit: int | None = Query(None),
    order: str | None = Query(None),
    stream_: bool | None = Query(None, alias="stream"),
) -> StreamingResponse | dict[str, object]:
    """Every event of every conversation, in log order: every tenant's, so admin keys only
    (403 for user keys; a user reads its own conversations' events one by one)."""
    require_admin(caller, "the global event feed (GET /v1/events)")
    return await events_response(svc, request, None, after, limit, order, stream_)


@router.get("/asyncapi.json", tags=["events"])
async def asyncapi(_: Caller) -> dict[str, object]:
    """The AsyncAPI document of the event subjects, for services subscribing on NATS."""
    return asyncapi_schema()
