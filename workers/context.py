"""What the model sees: the conversation so far, or the chain of previous responses,
then this request's input. Instructions are the request's own (OpenAI does not
carry them over from a previous response)."""

from typing import Any

from events.history import History
from events.ids import response_thread
from events.store import EventStore
from projections.point_in_time import reader_as_of
from projections.reader import ViewReader
from projections.views import ResponseView

MAX_CHAIN = 10_000


class ContextError(Exception):
    """The context cannot be built (a previous response vanished)."""


async def conversation_items(reader: ViewReader, conversation_id: str) -> list[dict[str, Any]]:
    conv = await reader.conversation(conversation_id)
    if conv is None or conv.deleted:
        raise ContextError(f"Conversation with id '{conversation_id}' not found.")
    return await reader.all_items(conv)


async def _turn(reader: ViewReader, store: EventStore, view: ResponseView) -> list[dict[str, Any]]:
    """A finished response's part of the context: its own context if it came from a
    conversation (as it was then), its input, its output."""
    items = await reader.response_input(view.id) + view.output
    if view.conversation_id:
        then = await reader_as_of(History(store), view.conversation_id, seq=view.context_seq)
        items = await conversation_items(then, view.conversation_id) + items
    return items


async def previous_chain(
    reader: ViewReader, store: EventStore, previous_id: str
) -> list[dict[str, Any]]:
    turns: list[list[dict[str, Any]]] = []
    next_id: str | None = previous_id
    while next_id and len(turns) < MAX_CHAIN:
        # As of its thread's head (read-your-writes): the API checked that it finished, a
        # moment ago maybe, and the projector may not have folded that yet.
        head = await store.head(response_thread(next_id))
        view, at = None, reader
        if head is not None:
            view, at = await reader.response_caught_up(next_id, head.seq)
        if view is None:
            raise ContextError(f"Previous response with id '{next_id}' not found.")
        turns.append(await _turn(at, store, view))
        next_id = None if view.conversation_id else view.previous_response_id
    return [item for turn in reversed(turns) for item in turn]


async def build_context(
    reader: ViewReader,
    store: EventStore,
    view: ResponseView,
    request_input: list[dict[str, Any]],
    items: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """`items`: the conversation's items when the caller has just read them."""
    if items is not None:
        earlier = items
    elif view.conversation_id:
        earlier = await conversation_items(reader, view.conversation_id)
    elif view.previous_response_id:
        earlier = await previous_chain(reader, store, view.previous_response_id)
    else:
        earlier = []
    return earlier + request_input


def drop_oldest(context: list[dict[str, Any]], protected: int) -> list[dict[str, Any]] | None:
    """`context` without the older half (at least one) of the items before its last
    `protected` ones (the request's own input, never dropped): `truncation: "auto"` after
    the upstream said the context does not fit. The cut moves on to where a user message
    starts, so a tool call's output never stays without its call, nor a reply without its
    question. None when nothing is left to drop.

    Halving needs no tokenizer of the upstream's model: n earlier items cost at most
    log2(n) + 1 refused calls, and what is kept is at least half of what fits."""
    earlier = len(context) - protected
    if earlier <= 0:
        return None
    cut = (earlier + 1) // 2
    while cut < earlier and not _starts_a_turn(context[cut]):
        cut += 1
    return context[cut:]


def _starts_a_turn(item: dict[str, Any]) -> bool:
    return item.get("type", "message") == "message" and item.get("role") == "user"
