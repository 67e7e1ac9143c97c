"""Which tenant owns a conversation, checked on every conversation endpoint.

The owner comes with the head read every command and read does anyway: each appended
message carries a `Convstore-Tenant` header (events/store.py). Only a head without it
(written before tenants existed, or by another writer) costs one more direct get, of the
`ConversationCreated` event, whose `tenant` field is the authoritative owner.
"""

from pydantic import ValidationError

from api.auth import require_tenant
from api.keys import Principal
from events import commands
from events.store import EventStore, Head


def conversation_not_found(conversation_id: str) -> str:
    return f"Conversation with id '{conversation_id}' not found."


async def conversation_owner(store: EventStore, conversation_id: str, head: Head) -> str | None:
    """The owning tenant; None when nothing says (its creation was purged or is unreadable)."""
    if head.tenant is not None:
        return head.tenant
    try:
        created = await store.creation(conversation_id)
    except (ValidationError, ValueError):
        return None
    return created.tenant if created is not None else None


async def check_owner(
    store: EventStore, principal: Principal, conversation_id: str, head: Head
) -> None:
    """404, as for a missing conversation, unless `principal`'s tenant owns it."""
    owner = await conversation_owner(store, conversation_id, head)
    require_tenant(principal, owner, conversation_not_found(conversation_id))


async def owned_live_head(store: EventStore, principal: Principal, conversation_id: str) -> Head:
    """The head of a live conversation of the principal's tenant, else the 404."""
    head = await commands.live_head(store, conversation_id)
    await check_owner(store, principal, conversation_id, head)
    return head
