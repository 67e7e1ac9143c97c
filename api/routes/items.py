"""/v1/conversations/{id}/items: add (up to 20, atomically), list, retrieve, delete."""

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from api import validation
from api.auth import Caller
from api.conversation_reads import conversation_reader
from api.errors import invalid, not_found
from api.item_references import resolve
from api.routes.conversations import list_object
from api.services import Svc, client_ip, include_param
from api.tenancy import check_owner, owned_live_head
from events import commands
from events.items import has_reference
from events.schema import EventBase, ItemAdded, ItemDeleted
from events.store import Head
from projections.reader import CursorNotFound

router = APIRouter(prefix="/v1/conversations/{conversation_id}/items", tags=["items"])
CREATE_PARAMS = frozenset({"items"})  # `include` is a query parameter here


@router.post("")
async def create_items(
    svc: Svc,
    caller: Caller,
    conversation_id: str,
    request: Request,
    body: Annotated[dict[str, Any] | None, Body()] = None,
) -> dict[str, Any]:
    conversation_id = validation.conversation_id(conversation_id)
    validation.include(include_param(request))
    body = body or {}
    validation.known(body, CREATE_PARAMS)
    validation.encodable(body, max_chars=svc.limits.max_text_chars)
    created_at = int(time.time())
    items = validation.items(body.get("items"), created_at, conversation_id, required=True)
    copies: dict[str, str] = {}
    if has_reference(items):  # the conversation's own 404 comes before its items'
        await owned_live_head(svc.store, caller, conversation_id)
        items, copies = await resolve(svc, caller, items, conversation_id, created_at, "items")
    who = caller.actor(client_ip(request))

    async def decide(head: Head) -> list[EventBase]:
        await check_owner(svc.store, caller, conversation_id, head)
        return [
            ItemAdded(
                conversation_id=conversation_id,
                item=i,
                actor=who,
                copied_from=copies.get(i["id"]),
            )
            for i in items
        ]

    await commands.decide_and_append(svc.store, conversation_id, decide)
    return list_object(items, False)


@router.get("")
async def list_items(
    svc: Svc,
    caller: Caller,
    conversation_id: str,
    request: Request,
    after: str | None = None,
    limit: int | None = Query(None),
    order: str | None = None,
    as_of: str | None = Query(None, description="log position or RFC 3339 time"),
) -> dict[str, Any]:
    conversation_id = validation.conversation_id(conversation_id)
    limit, order_ = validation.page(limit, order)
    after = validation.cursor(after)
    validation.include(include_param(request))
    # The cursor's position, and the page's items where this process can guess them, are
    # read in the same request as the conversation view: one round trip less.
    hints = svc.page_hints
    known = dict.fromkeys(hints.keys(conversation_id, after, limit, order_))
    view, reader = await conversation_reader(svc, caller, conversation_id, as_of, known)
    try:
        page = await reader.items(view, after, limit, order_, known)
    except CursorNotFound:
        raise invalid(
            f"Invalid 'after': no item with id '{after}' in this conversation.", "after"
        ) from None
    if as_of is None:
        hints.learn(conversation_id, view.next_item_pos, page, after, order_)
    return list_object(page.data, page.has_more)


@router.get("/{item_id}")
async def retrieve_item(
    svc: Svc,
    caller: Caller,
    conversation_id: str,
    item_id: str,
    request: Request,
    as_of: str | None = Query(None, description="log position or RFC 3339 time"),
) -> dict[str, Any]:
    conversation_id = validation.conversation_id(conversation_id)
    item_id = validation.item_id(item_id)
    validation.include(include_param(request))
    _, reader = await conversation_reader(svc, caller, conversation_id, as_of)
    item = await reader.item(conversation_id, item_id)
    if item is None:
        raise not_found(f"Item with id '{item_id}' not found.")
    return item


@router.delete("/{item_id}")
async def delete_item(
    svc: Svc, caller: Caller, conversation_id: str, item_id: str, request: Request
) -> dict[str, Any]:
    """Deletes one item; returns the Conversation, as OpenAI does."""
    conversation_id = validation.conversation_id(conversation_id)
    item_id = validation.item_id(item_id)
    who = caller.actor(client_ip(request))
    state: dict[str, Any] = {}

    async def decide(head: Head) -> list[EventBase]:
        await check_owner(svc.store, caller, conversation_id, head)
        view, reader = await svc.reader.caught_up(conversation_id, head)
        if await reader.item(conversation_id, item_id) is None:
            raise not_found(f"Item with id '{item_id}' not found.")
        state["conversation"] = view.public()
        return [ItemDeleted(conversation_id=conversation_id, item_id=item_id, actor=who)]

    await commands.decide_and_append(svc.store, conversation_id, decide)
    return state["conversation"]  # type: ignore[no-any-return]
