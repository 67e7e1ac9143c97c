"""Commands on a conversation: decide on the log's head, append with optimistic concurrency.

A command reads the conversation's head (one direct get), refuses if the
conversation does not exist or was deleted, builds its events, and appends them
expecting that head. If another writer got there first, it decides again.
"""

import asyncio
import random
from collections.abc import Awaitable, Callable

from events.schema import ConversationCreated, EventBase
from events.store import ConcurrencyConflict, EventStore, Head

MAX_ATTEMPTS = 200
# A head a process left by requesting a response: the model worker appends to the thread
# next (its claim, then the outcome), so that head is stale as a rule.
ANSWERED_ELSEWHERE = frozenset({"ResponseRequested"})


class ConversationNotFound(Exception):
    def __init__(self, conversation_id: str) -> None:
        super().__init__(f"Conversation with id '{conversation_id}' not found.")
        self.conversation_id = conversation_id


class TooMuchContention(Exception):
    """The conversation kept moving under us for MAX_ATTEMPTS tries."""


async def live_head(store: EventStore, conversation_id: str) -> Head:
    """The head of a conversation that exists and is not deleted, or ConversationNotFound."""
    head = await store.head(conversation_id)
    if head is None or head.gone:
        raise ConversationNotFound(conversation_id)
    return head


async def fresh_live_head(store: EventStore, conversation_id: str) -> Head:
    """`live_head` for commands on a conversation that another process writes as a rule (a
    response's request: the model worker appends its output). `decide_and_append` decides
    on a remembered head only if it is not a request of ours the worker answers next: the
    head a response's outcome left, which the API replica that relayed the response learns
    from its terminal event (`EventStore.learn_head`), is; a stale one costs a refused
    append."""
    return await live_head(store, conversation_id)


def _remembered(
    store: EventStore, conversation_id: str, head_of: Callable[[EventStore, str], Awaitable[Head]]
) -> Head | None:
    """The head the first attempt may decide on without reading it: none for a custom
    `head_of` (it may refuse what a remembered head would allow), nor a request of ours
    that a model worker answers next."""
    head = store.appended_head(conversation_id)
    if head is None or head_of not in (live_head, fresh_live_head):
        return None
    if head_of is fresh_live_head and head.event_type in ANSWERED_ELSEWHERE:
        return None
    return head


async def create(store: EventStore, events: list[EventBase]) -> int:
    """Append a new conversation (ConversationCreated first, then its items) atomically."""
    assert isinstance(events[0], ConversationCreated)
    return await store.append(events, expected_last_seq=0)


async def decide_and_append(
    store: EventStore,
    conversation_id: str,
    decide: Callable[[Head], Awaitable[list[EventBase]]],
    head_of: Callable[[EventStore, str], Awaitable[Head]] = live_head,
) -> tuple[int, list[EventBase]]:
    """Run `decide` against the thread's head and append its events; retry on conflict.

    Returns the sequence of the last appended event and the events themselves.
    `decide` may raise to refuse the command; it runs again after a conflict, so
    it must not have side effects. `head_of` reads the head, or raises when the
    thread cannot take the command (by default: a conversation that is gone).

    With the default `head_of` (and `fresh_live_head`, see there), the first attempt decides
    on the head this process's own last append left, or learned, when it has one (one
    round trip less for a conversation written through this replica); a stale one fails
    the append's guard and the next attempt reads the head. A `decide` that refuses, or
    finds nothing to do, on a remembered head may have judged stale state (an item added
    through another replica since), so those answers come only from the real head.
    Commands on one conversation from this process take turns (events/turns.py).
    """
    async with store.turns.of(conversation_id, store.check_connected):
        return await _decide_and_append(store, conversation_id, decide, head_of)


async def _decide_and_append(
    store: EventStore,
    conversation_id: str,
    decide: Callable[[Head], Awaitable[list[EventBase]]],
    head_of: Callable[[EventStore, str], Awaitable[Head]],
) -> tuple[int, list[EventBase]]:
    remembered = _remembered(store, conversation_id, head_of)
    for attempt in range(MAX_ATTEMPTS):
        if remembered is not None:
            head, remembered = remembered, None
            if head.gone:
                raise ConversationNotFound(conversation_id)
            try:
                events = await decide(head)
            except Exception:
                continue  # judged on a remembered head: only the real one may refuse
            if not events:
                continue
        else:
            head = await head_of(store, conversation_id)
            events = await decide(head)
            if not events:  # nothing to do: already so
                return head.seq, events
        try:
            return (
                await store.append(events, head.seq, head.hash, head.tenant, head.gone),
                events,
            )
        except ConcurrencyConflict:
            store.forget_head(conversation_id)
            if attempt == 0:
                continue  # a stale remembered head, most likely: read the real one now
            # Jittered backoff spreads out writers contending for one conversation.
            await asyncio.sleep(random.uniform(0, min(0.002 * attempt, 0.05)))
    raise TooMuchContention(conversation_id)
