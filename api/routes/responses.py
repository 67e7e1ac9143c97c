"""/v1/responses: create (sync, streamed or background), retrieve (or resume its stream),
delete, cancel, and input_items.

The API only appends facts and reads views: a model worker (workers/) makes the call.
A create waits for the response's streaming events on NATS, so any replica can answer
for any worker, and a stream can be resumed on another replica.
"""

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import StreamingResponse

from api import item_references, validation
from api.auth import Caller
from api.errors import APIError, invalid
from api.keys import Principal
from api.queue_timeout import fail_when_no_worker
from api.response_params import ResponseParams, check_context, parse
from api.response_reads import missing, read_response, thread_of
from api.routes.conversations import list_object
from api.services import Services, Svc, client_ip, include_param
from api.tenancy import check_owner, owned_live_head
from events import codec, commands, response_stream
from events.connection import cancel_for_sure
from events.items import has_reference
from events.response_stream import Frame
from events.schema import Actor, EventBase, ResponseCancelled, ResponseDeleted, ResponseRequested
from events.store import EventStore, Head
from projections.responses import apply_response
from projections.views import ResponseView

router = APIRouter(prefix="/v1/responses", tags=["responses"])


def _response_head(response_id: str) -> Any:
    """`head_of` for commands on a response: its thread's head, or 404 when it is gone."""

    async def head_of(store: EventStore, thread: str) -> Head:
        head = await store.head(thread)
        if head is None or head.event_type == "ConversationPurged":
            raise missing(response_id)
        if thread == response_id and head.event_type == "ResponseDeleted":
            raise missing(response_id)
        return head

    return head_of


async def _previous(svc: Services, caller: Principal, previous_id: str) -> None:
    """A previous response must exist and have finished with output to continue from."""
    try:
        _, view, _ = await read_response(svc, caller, previous_id)
    except APIError:
        raise invalid(
            f"Previous response with id '{previous_id}' not found.", "previous_response_id"
        ) from None
    if view.status not in ("completed", "incomplete"):
        raise invalid(
            f"Previous response with id '{previous_id}' has status '{view.status}'; only a "
            "completed response can be continued.",
            "previous_response_id",
        )


async def _request(
    svc: Services,
    caller: Principal,
    p: ResponseParams,
    who: Actor,
    created_at: int,
    response_id: str,
) -> ResponseView:
    """Append the ResponseRequested event: on the conversation, or on a thread of its own."""

    def event(thread: str, response_id: str, head_seq: int) -> ResponseRequested:
        return ResponseRequested(
            conversation_id=thread,
            response_id=response_id,
            created_at=created_at,
            model=p.model,
            instructions=p.instructions,
            input=p.input,
            copied_from=p.copied_from,
            previous_response_id=p.previous_response_id,
            background=p.background,
            store=p.store,
            stream=p.stream,
            metadata=p.metadata,
            params=p.params,
            context_seq=head_seq,
            actor=who,
            tenant=caller.tenant,
        )

    if p.conversation_id:
        requested: list[ResponseRequested] = []

        async def decide(head: Head) -> list[EventBase]:
            await check_owner(svc.store, caller, p.conversation_id or "", head)
            requested[:] = [event(p.conversation_id or "", response_id, head.seq)]
            return list(requested)

        seq, _ = await commands.decide_and_append(
            svc.store, p.conversation_id, decide, commands.fresh_live_head
        )
        request = requested[0]
    else:
        if p.previous_response_id:
            await _previous(svc, caller, p.previous_response_id)
        request = event(response_id, response_id, 0)
        seq = await svc.store.append([request], expected_last_seq=0, tenant=caller.tenant)
    view, _ = apply_response(None, request.model_copy(update={"seq": seq}))
    assert view is not None
    return view


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (event["type"].encode(), codec.dumps(event))


async def _relay(batches: AsyncIterator[list[Frame]]) -> AsyncIterator[bytes]:
    """The events as published (no decoding and encoding again), a batch per write."""
    async for batch in batches:
        yield b"".join(frame.sse() for frame in batch)


async def _one_by_one(frames: AsyncIterator[Frame]) -> AsyncIterator[list[Frame]]:
    async for frame in frames:
        yield [frame]


def _streaming(batches: AsyncIterator[list[Frame]]) -> StreamingResponse:
    return StreamingResponse(
        _relay(batches),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post("", response_model=None)
async def create_response(
    svc: Svc,
    caller: Caller,
    request: Request,
    body: Annotated[dict[str, Any] | None, Body()] = None,
) -> StreamingResponse | dict[str, Any]:
    created_at = int(time.time())
    p = parse(body or {}, created_at, svc.limits.max_text_chars)
    if has_reference(p.input):  # the conversation's or previous response's 404 first
        if p.conversation_id:
            await owned_live_head(svc.store, caller, p.conversation_id)
        elif p.previous_response_id:
            await _previous(svc, caller, p.previous_response_id)
        p.input, p.copied_from = await item_references.resolve(
            svc, caller, p.input, p.conversation_id or p.response_id, created_at, "input"
        )
    check_context(p)
    response_id = p.response_id
    # Listening before the request exists: its first events cannot be missed.
    # The terminal event carries the thread's head after the outcome: the next turn through
    # this replica appends without reading it (commands.fresh_live_head).
    learn = partial(svc.store.learn_head, p.conversation_id) if p.conversation_id else None
    live = response_stream.LiveEvents(svc.nc, svc.js, response_id, learn)
    if not p.background or p.stream:
        await live.start()
    try:
        who = caller.actor(client_ip(request))
        view = await _request(svc, caller, p, who, created_at, response_id)
    except BaseException:
        await live.close()
        raise
    if p.background:
        return _streaming(live.frames()) if p.stream else view.public()
    frames = _watched(svc, view, live.frames())
    if p.stream:
        return _streaming(frames)
    try:
        async for batch in frames:
            for frame in batch:
                if frame.type in response_stream.TERMINAL_TYPES:
                    event = frame.event()
                    if "response" in event:
                        return dict(event["response"])
    finally:
        await frames.aclose()
    _, view, _ = await read_response(svc, caller, view.id)
    return view.public()


async def _watched(
    svc: Services, queued: ResponseView, frames: AsyncGenerator[list[Frame], None]
) -> AsyncGenerator[list[Frame], None]:
    """`frames`, while a watch fails the response if no model worker is alive to take it
    (api/queue_timeout.py). The watch and the subscription end with the client's wait."""
    every = svc.queue_timeout
    watch = asyncio.create_task(fail_when_no_worker(svc, queued, every)) if every > 0 else None
    try:
        async for batch in frames:
            yield batch
    finally:
        if watch is not None:
            await cancel_for_sure(watch)
        await frames.aclose()


@router.get("/{response_id}", response_model=None)
async def retrieve_response(
    svc: Svc,
    caller: Caller,
    response_id: str,
    request: Request,
    stream: bool = False,
    starting_after: int | None = Query(None, ge=0),
) -> StreamingResponse | dict[str, Any]:
    validation.include(include_param(request))
    _, view, _ = await read_response(svc, caller, response_id)
    if stream:
        if view.terminal and await response_stream.last_event(svc.js, view.id) is None:
            # Its streaming events have expired: what is left to say is how it ended,
            # opened as every stream is (the SDK's stream helper needs response.created).
            final = view.public()
            created = response_stream.opening(final)
            return _events(
                [
                    {"type": "response.created", "sequence_number": 0, "response": created},
                    {"type": f"response.{view.status}", "sequence_number": 1, "response": final},
                ],
                starting_after,
            )
        frames = response_stream.follow_frames(svc.js, view.id, starting_after)
        return _streaming(_one_by_one(frames))
    return view.public()


def _events(events: list[dict[str, Any]], starting_after: int | None) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        for event in events:
            if starting_after is None or event["sequence_number"] > starting_after:
                yield _sse(event)

    return StreamingResponse(body(), media_type="text/event-stream")


@router.delete("/{response_id}")
async def delete_response(
    svc: Svc, caller: Caller, response_id: str, request: Request
) -> dict[str, Any]:
    thread = thread_of(response_id)
    await read_response(svc, caller, response_id)
    who = caller.actor(client_ip(request))

    async def decide(head: Head) -> list[EventBase]:
        view = await svc.reader.response_at(response_id, head.seq)
        if view is None:
            raise missing(response_id)
        return [ResponseDeleted(conversation_id=thread, response_id=response_id, actor=who)]

    await commands.decide_and_append(svc.store, thread, decide, _response_head(response_id))
    return {"id": response_id, "object": "response.deleted", "deleted": True}


@router.post("/{response_id}/cancel")
async def cancel_response(
    svc: Svc, caller: Caller, response_id: str, request: Request
) -> dict[str, Any]:
    """Cancel a background response. A queued one ends here; one in progress ends when its
    worker sees the event (its upstream call is stopped at once)."""
    thread = thread_of(response_id)
    await read_response(svc, caller, response_id)
    who = caller.actor(client_ip(request))
    seen: list[ResponseView] = []

    async def decide(head: Head) -> list[EventBase]:
        view = await svc.reader.response_at(response_id, head.seq)
        if view is None or not view.store:
            raise missing(response_id)
        if not view.background:
            raise invalid("Cannot cancel a synchronous response.", None)
        seen[:] = [view]
        if view.status == "cancelled":
            return []
        if view.terminal:
            raise invalid(f"Cannot cancel a response with status '{view.status}'.", None)
        return [ResponseCancelled(conversation_id=thread, response_id=response_id, actor=who)]

    view = await _cancel(svc, thread, response_id, decide)
    if seen and seen[0].status == "queued":
        # No worker holds it, so no worker will end its stream: say it here.
        await response_stream.end_untaken(
            svc.nc, svc.js, response_id, seen[0].public(), view.public()
        )
    return view.public()


async def _cancel(svc: Services, thread: str, response_id: str, decide: Any) -> ResponseView:
    """Append the cancel `decide` asks for (nothing when already cancelled); the view after."""
    seq, _ = await commands.decide_and_append(
        svc.store, thread, decide, _response_head(response_id)
    )
    view = await svc.reader.response_at(response_id, seq)
    if view is None:
        raise missing(response_id)
    return view


@router.get("/{response_id}/input_items")
async def list_input_items(
    svc: Svc,
    caller: Caller,
    response_id: str,
    request: Request,
    after: str | None = None,
    limit: int | None = Query(None),
    order: str | None = None,
) -> dict[str, Any]:
    limit_, order_ = validation.page(limit, order)
    after = validation.cursor(after)
    validation.include(include_param(request))
    _, view, reader = await read_response(svc, caller, response_id)
    items = await reader.response_input(view.id)
    if order_ == "desc":
        items.reverse()
    if after is not None:
        ids = [i.get("id") for i in items]
        if after not in ids:
            raise invalid(f"Invalid 'after': no input item with id '{after}'.", "after")
        items = items[ids.index(after) + 1 :]
    return list_object(items[:limit_], len(items) > limit_)
