"""`{"type": "item_reference", "id": ...}` items: resolved to a copy of the stored item.

OpenAI takes a reference wherever it takes an input item (a response's input, items
added to a conversation). An item id names its thread (events/ids.py), so the item is
found in one lookup of that conversation's item view, or of the stateless response's
input and output, read-your-writes like every read, and only in the caller's tenant.
The copy gets an id of the thread it is added to: a thread's ids stay its own, and the
log holds the item itself, so a replay never depends on another thread's history.
"""

from typing import Any

from api.errors import APIError
from api.keys import Principal
from api.response_reads import read_response
from api.services import Services
from api.tenancy import owned_live_head
from events.commands import ConversationNotFound
from events.ids import item_thread
from events.items import copy_item, has_reference, is_reference


def not_stored(item_id: str, param: str) -> APIError:
    """OpenAI's answer to a reference to no stored item (404, the SDK's NotFoundError)."""
    return APIError(
        404,
        f"Item with id '{item_id}' not found. Items are not persisted when `store` is set "
        "to false. Try again with `store` set to true, or remove this item from your input.",
        param=param,
    )


async def _find(
    svc: Services, caller: Principal, item_id: str, thread: str
) -> dict[str, Any] | None:
    """The stored item, or None when it is not there for this caller. An id that names no
    thread (one made before ids did) is looked up in `thread` when it is a conversation."""
    where = item_thread(item_id) or (thread if thread.startswith("conv_") else None)
    if where is None:
        return None
    try:
        if where.startswith("conv_"):
            head = await owned_live_head(svc.store, caller, where)
            conv, reader = await svc.reader.caught_up(where, head)
            if conv is None or conv.deleted:
                return None
            return await reader.item(where, item_id)
        _, view, reader = await read_response(svc, caller, where)
    except (APIError, ConversationNotFound):  # gone, or another tenant's: not found
        return None
    for item in [*await reader.response_input(view.id), *view.output]:
        if item.get("id") == item_id:
            return item
    return None


async def resolve(
    svc: Services,
    caller: Principal,
    items: list[dict[str, Any]],
    thread: str,
    created_at: int,
    param: str,
) -> list[dict[str, Any]]:
    """`items` with each reference replaced by a copy of its item for `thread`, or the 404
    of the first that names no stored item. Nothing is appended before this returns."""
    if not has_reference(items):
        return items
    out = []
    for n, item in enumerate(items):
        if is_reference(item):
            stored = await _find(svc, caller, item["id"], thread)
            if stored is None:
                raise not_stored(item["id"], f"{param}[{n}]")
            item = copy_item(stored, created_at, thread)
        out.append(item)
    return out
