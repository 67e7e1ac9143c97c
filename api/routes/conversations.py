"""/v1/conversations: create, retrieve, update, delete, and list (our extension)."""

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request

from api import item_references, validation
from api.auth import Caller
from api.conversation_reads import conversation_reader
from api.errors import invalid, not_found
from api.services import Svc, client_ip
from api.tenancy import check_owner, conversation_not_found
from events import commands
from events.ids import new_id
from events.schema import (
    ConversationCreated,
    ConversationDeleted,
    EventBase,
    ItemAdded,
    MetadataReplaced,
)
from events.store import Head
from projections.reader import CursorNotFound

router = APIRouter(prefix="/v1/conversations", tags=["conversations"])
JSONBody = Annotated[dict[str, Any] | None, Body()]
CREATE_PARAMS = frozenset({"items", "metadata", "safety_identifier"})
UPDATE_PARAMS = frozenset({"metadata"})


def list_object(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


@router.post("")
async def create_conversation(
    svc: Svc, caller: Caller, request: Request, body: JSONBody = None
) -> dict[str, Any]:
    body = body or {}
    validation.known(body, CREATE_PARAMS)
    validation.encodable(body, max_chars=svc.limits.max_text_chars)
    validation.optional_string(body, "safety_identifier")  # accepted, not acted on
    created_at = int(time.time())
    metadata = validation.metadata(body.get("metadata"))
    conv_id = new_id("conv")
    items = validation.items(body.get("items"), created_at, conv_id, required=False)
    items, copies = await item_references.resolve(svc, caller, items, conv_id, created_at, "items")
    who = caller.actor(client_ip(request))
    created = ConversationCreated(
        conversation_id=conv_id,
        created_at=created_at,
        metadata=metadata,
        tenant=caller.tenant,
        actor=who,
    )
    added = [
        ItemAdded(conversation_id=conv_id, item=i, actor=who, copied_from=copies.get(i["id"]))
        for i in items
    ]
    await commands.create(svc.store, [created, *added])
    return {"id": conv_id, "object": "conversation", "created_at": created_at, "metadata": metadata}


@router.get("")
async def list_conversations(
    svc: Svc,
    caller: Caller,
    after: str | None = None,
    limit: int | None = Query(None),
    order: str | None = None,
) -> dict[str, Any]:
    """Not in OpenAI's API: the caller's tenant's live conversations, newest first, paged
    like items."""
    limit, order_ = validation.page(limit, order)
    after = validation.cursor(after)
    await svc.reader.wait_checkpoint(await svc.store.last_seq())
    try:
        page = await svc.reader.conversations(caller.tenant, after, limit, order_)
    except CursorNotFound:
        raise invalid(f"Invalid 'after': no conversation with id '{after}'.", "after") from None
    return list_object(page.data, page.has_more)


@router.get("/{conversation_id}")
async def retrieve_conversation(
    svc: Svc,
    caller: Caller,
    conversation_id: str,
    as_of: str | None = Query(None, description="log position or RFC 3339 time"),
) -> dict[str, Any]:
    conversation_id = validation.conversation_id(conversation_id)
    view, _ = await conversation_reader(svc, caller, conversation_id, as_of)
    return view.public()


@router.post("/{conversation_id}")
async def update_conversation(
    svc: Svc,
    caller: Caller,
    conversation_id: str,
    request: Request,
    body: JSONBody = None,
) -> dict[str, Any]:
    conversation_id = validation.conversation_id(conversation_id)
    body = body or {}
    validation.known(body, UPDATE_PARAMS)
    validation.encodable(body, max_chars=svc.limits.max_text_chars)
    if "metadata" not in body:
        raise invalid(
            "Missing required parameter: 'metadata'.", "metadata", "missing_required_parameter"
        )
    metadata = validation.metadata(body["metadata"])
    who = caller.actor(client_ip(request))

    async def decide(head: Head) -> list[EventBase]:
        await check_owner(svc.store, caller, conversation_id, head)
        return [MetadataReplaced(conversation_id=conversation_id, metadata=metadata, actor=who)]

    await commands.decide_and_append(svc.store, conversation_id, decide)
    created = await svc.store.creation(conversation_id)
    if created is None:  # purged between the append and now
        raise not_found(conversation_not_found(conversation_id))
    return {
        "id": conversation_id,
        "object": "conversation",
        "created_at": created.created_at,
        "metadata": metadata,
    }


@router.delete("/{conversation_id}")
async def delete_conversation(
    svc: Svc, caller: Caller, conversation_id: str, request: Request
) -> dict[str, Any]:
    conversation_id = validation.conversation_id(conversation_id)
    who = caller.actor(client_ip(request))

    async def decide(head: Head) -> list[EventBase]:
        await check_owner(svc.store, caller, conversation_id, head)
        return [ConversationDeleted(conversation_id=conversation_id, actor=who)]

    await commands.decide_and_append(svc.store, conversation_id, decide)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}
