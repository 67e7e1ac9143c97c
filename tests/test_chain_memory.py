"""The worker's memory of `previous_response_id` chains (workers/chain_memory.py): a walk
over remembered turns reads no turn, gives the same context as reading them all, and
gives way to reading when a remembered response was deleted meanwhile. Against the
session's servers; the walk runs here, on a reader of the same views."""

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai import OpenAI

from events.connection import connect
from events.history import History
from events.purge import purge
from events.schema import EVENT_TYPES, Actor
from events.store import EventStore, Head
from projections.active import ActiveViews
from projections.reader import ViewReader
from workers.chain_memory import ChainMemory
from workers.context import AFTER_FINISH, ContextError, _turn, previous_chain

# Event types that never follow a finished response on its own thread, and why: if a new
# type is added, this test fails until someone decides whether it makes a remembered turn
# stale (then it belongs in AFTER_FINISH).
NEVER_AFTER_FINISH = {
    "ConversationCreated": "starts a conversation's thread, not a response's",
    "ItemAdded": "conversations only",
    "MetadataReplaced": "conversations only",
    "ItemDeleted": "conversations only",
    "ConversationDeleted": "conversations only",
    "ResponseRequested": "starts the response's thread",
    "ResponseInProgress": "refused once the response finished (the claim decides on it)",
    "ResponseCompleted": "one outcome per response, appended only while its claim holds",
    "ResponseFailed": "one outcome per response, appended only while its claim holds",
    "ResponseCancelled": "refused for a finished response (400)",
}


def test_every_event_type_is_classified() -> None:
    assert set(AFTER_FINISH).isdisjoint(NEVER_AFTER_FINISH)
    assert set(AFTER_FINISH) | set(NEVER_AFTER_FINISH) == set(EVENT_TYPES)


class CountingStore(EventStore):
    """Counts the head reads a walk makes: one per turn it reads from the log."""

    heads = 0

    async def head(self, conversation_id: str) -> Head | None:
        self.heads += 1
        return await super().head(conversation_id)


@pytest.fixture
async def walker(nats_url: str) -> AsyncIterator[tuple[ViewReader, CountingStore]]:
    nc = await connect([nats_url], "test-chain-memory")
    store = CountingStore(nc, nc.jetstream())
    views = ActiveViews(store.js)
    await views.start()
    try:
        yield ViewReader(views, wait_timeout=5, history=History(store)), store
    finally:
        await views.stop()
        await nc.close()


def _chain(client: OpenAI, turns: int) -> list[Any]:
    chain: list[Any] = []
    for i in range(turns):
        previous = chain[-1].id if chain else None
        chain.append(
            client.responses.create(model="m", input=f"t{i}", previous_response_id=previous)
        )
    return chain


async def test_a_remembered_chain_is_walked_without_reading_a_turn(
    client: OpenAI, walker: tuple[ViewReader, CountingStore]
) -> None:
    reader, store = walker
    chain = _chain(client, 6)
    read = await previous_chain(reader, store, chain[-1].id)
    assert store.heads == 6
    texts = [i["content"][0]["text"] for i in read]
    assert texts[0::2] == [f"t{i}" for i in range(6)]
    assert texts[1::2] == [r.output_text for r in chain]

    memory = ChainMemory()
    assert await previous_chain(reader, store, chain[-1].id, memory) == read
    assert len(memory) == 6 and store.heads == 12
    assert await previous_chain(reader, store, chain[-1].id, memory) == read
    assert store.heads == 12  # every turn remembered: none read

    # A turn the worker remembers as it finishes it (its request's input and its output)
    # is the turn a read gives.
    events = [e.body() for e in (await History(store).page(chain[-1].id, None, 10))[0]]
    (requested,) = [e for e in events if e["type"] == "ResponseRequested"]
    (completed,) = [e for e in events if e["type"] == "ResponseCompleted"]
    view, _ = await reader.response_caught_up(chain[-1].id, 0)
    assert view is not None
    assert await _turn(reader, store, view) == [*requested["input"], *completed["output"]]


@pytest.mark.parametrize("how", ["deleted", "erased"])
async def test_a_removed_turn_is_not_taken_from_memory(
    client: OpenAI, walker: tuple[ViewReader, CountingStore], how: str
) -> None:
    """A deleted response, or an erased one (GDPR): what a worker remembers of it never
    reaches a model; the rest of the chain is still remembered."""
    reader, store = walker
    chain = _chain(client, 4)
    memory = ChainMemory()
    assert "t1" in str(await previous_chain(reader, store, chain[-1].id, memory))
    if how == "deleted":
        client.responses.delete(chain[1].id)
    else:
        await purge(store, chain[1].id, Actor(id="dpo", kind="system"))
    with pytest.raises(ContextError, match=chain[1].id):
        await previous_chain(reader, store, chain[-1].id, memory)
    with pytest.raises(ContextError, match=chain[1].id):  # the same without memory
        await previous_chain(reader, store, chain[-1].id)
    assert memory.get(chain[1].id) is None
    before = store.heads
    assert len(await previous_chain(reader, store, chain[0].id, memory)) == 2
    assert store.heads == before


def test_memory_stays_within_its_budget() -> None:
    item = {"type": "message", "role": "user", "content": "x" * 100}
    memory = ChainMemory(size=3, budget=10_000)
    for i in range(5):
        memory.put(f"r{i}", None, [item])
    assert len(memory) == 3 and memory.get("r0") is None and memory.get("r4") is not None
    memory.put("huge", None, [item] * 30)  # over a quarter of the budget: not held
    assert memory.get("huge") is None
    memory = ChainMemory(size=100, budget=1_000)
    for i in range(20):
        memory.put(f"r{i}", None, [item])
    assert memory.bytes <= 1_000 and memory.get("r19") is not None
    memory.forget("r19")
    assert memory.get("r19") is None


def test_a_response_whose_chain_lost_a_turn_fails_at_once(client: OpenAI) -> None:
    """An earlier turn deleted: the worker says so (it used to wait for the deleted
    response's view until its read timed out, and leave the delivery to come back)."""
    chain = _chain(client, 3)
    client.responses.delete(chain[0].id)
    started = time.monotonic()
    r = client.responses.create(model="m", input="next", previous_response_id=chain[-1].id)
    assert r.status == "failed" and r.error is not None
    assert r.error.code == "invalid_prompt" and chain[0].id in r.error.message
    assert time.monotonic() - started < 4  # the reader's wait for views is 5 s
