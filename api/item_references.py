"""`{"type": "item_reference", "id": ...}` items: resolved to a copy of the stored item.

OpenAI takes a reference wherever it takes an input item (a response's input, items
added to a conversation). An item id names its thread (events/ids.py), so the item is
found in one lookup of that conversation's item view, or of the stateless response's
input and output, read-your-writes like every read, and only in the caller's tenant.
The copy gets an id of the thread it is added to: a thread's ids stay its own, and the
log holds the item itself, so a replay never depends on another thread's history.
"""

from collections.abc import Awaitable, Callable
from functools import partial
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


Lookup = Callable[[str], Awaitable[dict[str, Any] | None]]


async def _nothing(item_id: str) -> None:
    return None


async def _open(svc: Services, caller: Principal, thread: str) -> Lookup:
    """A lookup of item ids in one thread as of now (read-your-writes), or one that finds
    nothing when the thread is gone, not stored, or another tenant's."""
    try:
        if thread.startswith("conv_"):
            head = await owned_live_head(svc.store, caller, thread)
            conv, reader = await svc.reader.caught_up(thread, head)
            if conv is None or conv.deleted:
                return _nothing
            return partial(reader.item, thread)
        _, view, reader = await read_response(svc, caller, thread)
    except (APIError, ConversationNotFound):
        return _nothing
    items = {item.get("id"): item for item in await reader.response_input(view.id)}
    items.update((item.get("id"), item) for item in view.output)

    async def lookup(item_id: str) -> dict[str, Any] | None:
        return items.get(item_id)

    return lookup


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
    opened: dict[str, Lookup] = {}  # each thread read once, however many references
    out = []
    for n, item in enumerate(items):
        if is_reference(item):
            # An id that names no thread (made before ids did) is looked for in `thread`
            # when that is a conversation.
            where = item_thread(item["id"]) or (thread if thread.startswith("conv_") else None)
            if where is not None and where not in opened:
                opened[where] = await _open(svc, caller, where)
            stored = await opened[where](item["id"]) if where is not None else None
            if stored is None:
                raise not_stored(item["id"], f"{param}[{n}]")
            item = copy_item(stored, created_at, thread)
        out.append(item)
    return out
