"""What the model sees: the conversation so far, or the chain of previous responses,
then this request's input. Instructions are the request's own (OpenAI does not
carry them over from a previous response). A chain's turns come from the worker's
memory where it can vouch for them (workers/chain_memory.py); `drop_oldest` shortens a
context the upstream refused, for `truncation: "auto"`."""

from typing import Any

from events.history import History
from events.ids import response_thread
from events.items import orphan_message, orphan_output
from events.store import EventStore, Head
from events.subjects import conversation_subject
from projections.point_in_time import reader_as_of
from projections.reader import ViewReader
from projections.views import ResponseView
from workers.chain_memory import ChainMemory

MAX_CHAIN = 10_000


class ContextError(Exception):
    """The context cannot be built (a previous response vanished) or cannot be sent (a
    function call's output without its call)."""


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
    reader: ViewReader,
    store: EventStore,
    previous_id: str,
    memory: ChainMemory | None = None,
) -> list[dict[str, Any]]:
    """Every turn of the chain ending with `previous_id`, oldest first. Turns in `memory`
    are used once none of their threads is found deleted or erased (one batched read
    for all); one that is gets forgotten and the walk done again, reading it."""
    for _ in range(2):
        turns, used = await _walk(reader, store, previous_id, memory)
        if not used:
            break
        assert memory is not None
        subjects = [conversation_subject(rid, t) for rid in used for t in AFTER_FINISH]
        changed = {s.split(".", 2)[1] for s in await History(store).last_seqs(subjects)}
        if not changed:
            break
        for rid in changed:  # deleted or erased since: read again (and refused, if gone)
            memory.forget(rid)
    else:
        turns, _ = await _walk(reader, store, previous_id, None)
    return [item for turn in reversed(turns) for item in turn]


async def _walk(
    reader: ViewReader, store: EventStore, previous_id: str, memory: ChainMemory | None
) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """The chain's turns, newest first, and the ids of the remembered ones it used."""
    turns: list[list[dict[str, Any]]] = []
    used: list[str] = []
    next_id: str | None = previous_id
    while next_id and len(turns) < MAX_CHAIN:
        known = memory.get(next_id) if memory is not None else None
        if known is not None:
            used.append(next_id)
            turns.append(known.items)
            next_id = known.previous_id
            continue
        # As of its thread's head (read-your-writes): the API checked that it finished, a
        # moment ago maybe, and the projector may not have folded that yet.
        thread = response_thread(next_id)
        head = await store.head(thread)
        view, at = None, reader
        if head is not None and not _gone(head, thread == next_id):
            view, at = await reader.response_caught_up(next_id, head.seq)
        if view is None:
            raise ContextError(f"Previous response with id '{next_id}' not found.")
        turn = await _turn(at, store, view)
        if memory is not None and remembered(view):
            memory.put(next_id, view.previous_response_id, turn)
        turns.append(turn)
        next_id = None if view.conversation_id else view.previous_response_id
    return turns, used


def _gone(head: Head, own_thread: bool) -> bool:
    """The thread ends with the response's erasure (or, on its own thread, deletion): its
    view is gone and waiting for it would only time out."""
    return head.event_type == "ConversationPurged" or (
        own_thread and head.event_type == "ResponseDeleted"
    )


# What may follow a finished response on its own thread: its deletion or erasure. Either
# makes a remembered turn stale (tests/test_chain_memory.py holds every other event type
# to never following one).
AFTER_FINISH = ("ResponseDeleted", "ConversationPurged")


def remembered(view: ResponseView) -> bool:
    """A turn that stays as it is until its response is deleted or erased: a finished
    response of a thread of its own. A conversation's turn holds the conversation as of
    then, which the conversation's deletion or erasure must stop too: it is read each time."""
    return view.conversation_id is None and view.status in ("completed", "incomplete")


async def build_context(
    reader: ViewReader,
    store: EventStore,
    view: ResponseView,
    request_input: list[dict[str, Any]],
    items: list[dict[str, Any]] | None = None,
    chains: ChainMemory | None = None,
) -> list[dict[str, Any]]:
    """`items`: the conversation's items when the caller has just read them; `chains`:
    the worker's memory of chain turns."""
    if items is not None:
        earlier = items
    elif view.conversation_id:
        earlier = await conversation_items(reader, view.conversation_id)
    elif view.previous_response_id:
        earlier = await previous_chain(reader, store, view.previous_response_id, chains)
    else:
        earlier = []
    context = earlier + request_input
    # The request's outputs need their calls before them. The API checks this only when
    # the input is the whole context; here the context is known. An orphan stored
    # earlier is not this request's doing, and refusing it would fail every later turn.
    call_id = orphan_output(context, len(earlier))
    if call_id is not None:
        raise ContextError(orphan_message(call_id))
    return context


def drop_oldest(context: list[dict[str, Any]], protected: int) -> list[dict[str, Any]] | None:
    """`context` without the older half (at least one) of the items before its last
    `protected` ones (the request's own input, never dropped): `truncation: "auto"` after
    the upstream said the context does not fit. The cut moves on to where a user message
    starts, so a tool call's output never stays without its call, nor a reply without its
    question, and back before the call of an output in the input. None when nothing is
    left to drop.

    Halving needs no tokenizer of the upstream's model: n earlier items cost at most
    log2(n) + 1 refused calls, and what is kept is within a factor of two of what fits
    (give or take a turn)."""
    earlier = len(context) - protected
    if earlier <= 0:
        return None
    cut = (earlier + 1) // 2
    while cut < earlier and not _starts_a_turn(context[cut]):
        cut += 1
    # Nor may the input's own outputs lose their calls: the cut stays before the first
    # one's turn (or there is nothing left to drop).
    answered = {i.get("call_id") for i in context[earlier:] if i.get("type") == OUTPUT}
    needed = [n for n in range(cut) if _is_call(context[n]) and context[n]["call_id"] in answered]
    if needed:
        cut = needed[0]
        while cut > 0 and not _starts_a_turn(context[cut]):
            cut -= 1
        if cut == 0:
            return None
    return context[cut:]


OUTPUT = "function_call_output"


def _is_call(item: dict[str, Any]) -> bool:
    return item.get("type") == "function_call" and "call_id" in item


def _starts_a_turn(item: dict[str, Any]) -> bool:
    return item.get("type", "message") == "message" and item.get("role") == "user"
