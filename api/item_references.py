"""`{"type": "item_reference", "id": ...}` items: resolved to a copy of the stored item.

OpenAI takes a reference wherever it takes an input item (a response's input, items
added to a conversation). An item id names its thread (events/ids.py), so the item is
found in one lookup of that conversation's item view, or of the stateless response's
input and output, read-your-writes like every read, and only in the caller's tenant.
The copy gets an id of the thread it is added to: a thread's ids stay its own, and the
log holds the item itself, so a replay never depends on another thread's history.
"""

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from api.conversation_reads import conversation_reader
from api.errors import APIError
from api.keys import Principal
from api.response_reads import read_response
from api.services import Services
from events.commands import ConversationNotFound
from events.ids import item_thread
from events.items import copy_item, has_reference, is_reference
from events.subjects import is_safe_id


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
            _, reader = await conversation_reader(svc, caller, thread, None)
            return partial(reader.item, thread)
        _, view, reader = await read_response(svc, caller, thread)
    except (APIError, ConversationNotFound):
        return _nothing
    items = {item.get("id"): item for item in await reader.response_input(view.id)}
    items.update((item.get("id"), item) for item in view.output)

    async def lookup(item_id: str) -> dict[str, Any] | None:
        return items.get(item_id)

    return lookup


def _where(item_id: str, thread: str) -> str | None:
    """The thread to look for `item_id` in: the one it names; for an id made before ids
    named their thread, `thread` when that is a conversation; None for an id that cannot
    be a stored item's (a key wildcard such as `*` would match another)."""
    if not is_safe_id(item_id):
        return None
    return item_thread(item_id) or (thread if thread.startswith("conv_") else None)


async def resolve(
    svc: Services,
    caller: Principal,
    items: list[dict[str, Any]],
    thread: str,
    created_at: int,
    param: str,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """`items` with each reference replaced by a copy of its item for `thread`, and each
    copy's id -> the id it copies (recorded in the events, for audit); or the 404 of the
    first reference that names no stored item. Nothing is appended before this returns.
    Each thread named is read once, all of them at the same time."""
    if not has_reference(items):
        return items, {}
    wanted = {n: _where(i["id"], thread) for n, i in enumerate(items) if is_reference(i)}
    threads = sorted({where for where in wanted.values() if where is not None})
    opened = await asyncio.gather(*(_open(svc, caller, where) for where in threads))
    lookups = dict(zip(threads, opened, strict=True))
    found = await asyncio.gather(
        *(
            lookups[where](items[n]["id"]) if where is not None else _nothing(items[n]["id"])
            for n, where in wanted.items()
        )
    )
    out = list(items)
    copies: dict[str, str] = {}
    for n, stored in zip(wanted, found, strict=True):
        if stored is None:
            raise not_stored(items[n]["id"], f"{param}[{n}]")
        out[n] = copy_item(stored, created_at, thread)
        copies[out[n]["id"]] = items[n]["id"]
    return out, copies
