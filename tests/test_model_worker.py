"""The model worker in this process, on a real nats-server: its model call overlaps the
claim's append, and nothing it streams is published before the claim is stored.

Faults are injected by a store that appends a real event of its own around the claim;
the response has a thread of its own, so the worker's fast path needs no projector.
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from events.chain import ChainVerifier
from events.connection import connect
from events.history import History
from events.ids import new_id, new_response_id
from events.response_stream import LiveEvents, ensure_response_stream
from events.schema import (
    ConversationCreated,
    EventBase,
    MetadataReplaced,
    ResponseDeleted,
    ResponseInProgress,
    ResponseRequested,
)
from events.store import HEAD_HEADER, EventStore, Head, ensure_stream, parse_head_header
from events.subjects import STREAM_NAME, conversation_filter, response_stream_subject
from projections.reader import ViewReader
from projections.rebuild import fold_log
from projections.store import MemoryViews
from projections.views import conversation_key
from workers.model_worker import ModelWorker
from workers.providers.base import Chunk, Finish, ModelCall, TextDelta
from workers.providers.registry import Registry, Route


class Recording:
    """A provider that says one word, then (with `hang`) waits until it is cancelled."""

    name = "recording"

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang
        self.called_at: float | None = None
        self.cancelled = False
        self.calls: list[ModelCall] = []

    async def stream(self, call: ModelCall) -> AsyncIterator[Chunk]:
        self.called_at = time.monotonic()
        self.calls.append(call)
        yield TextDelta("hello")
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled = True
                raise
        yield Finish("stop")


class OneProvider(Registry):
    def __init__(self, provider: Recording) -> None:
        super().__init__({})
        self.provider = provider

    def route(self, model: str) -> Route:
        return Route(self.provider, model)  # type: ignore[arg-type]


class ClaimFault(EventStore):
    """Delays each claim's append by `delay` (noting when it was stored), and with `lose`
    first appends a deletion of the response, so that the claim loses the race; with
    `interleave`, first appends that event instead (once), on the claim's thread."""

    def __init__(
        self,
        *args: Any,
        delay: float = 0.0,
        lose: bool = False,
        interleave: EventBase | None = None,
    ) -> None:
        super().__init__(*args)
        self.delay = delay
        self.lose = lose
        self.interleave = interleave
        self.claims = 0
        self.claimed_at: float | None = None
        self.heads = 0

    async def head(self, conversation_id: str) -> Any:
        self.heads += 1
        return await super().head(conversation_id)

    async def append(self, events: list[EventBase], expected_last_seq: int, *args: Any) -> int:
        first = events[0]
        if isinstance(first, ResponseInProgress):
            self.claims += 1
            await asyncio.sleep(self.delay)
            if self.interleave is not None:
                moved, self.interleave = self.interleave, None
                await super().append([moved], expected_last_seq, *args)
            if self.lose:
                self.lose = False
                deleted = ResponseDeleted(
                    conversation_id=first.conversation_id, response_id=first.response_id
                )
                await super().append([deleted], expected_last_seq, *args)
            seq = await super().append(events, expected_last_seq, *args)
            self.claimed_at = time.monotonic()
            return seq
        return await super().append(events, expected_last_seq, *args)


@pytest.fixture
async def nats(fresh_nats: str) -> AsyncIterator[Any]:
    """A server of its own: the session's model workers would take these requests too."""
    nc = await connect([fresh_nats], "test-model-worker")
    js = nc.jetstream()
    await ensure_stream(js)
    await ensure_response_stream(js)
    yield nc, js
    await nc.close()


async def deliver(
    nc: Any,
    js: Any,
    store: EventStore,
    conv: str | None = None,
    text: str = "hi",
    previous: str | None = None,
) -> tuple[str, Any, Any]:
    """A new response (on `conv`'s head, or on a thread of its own), as delivered to a
    worker, and a core NATS subscription to its streaming events (made before anything
    could be published)."""
    rid = new_response_id(conv)
    head = await store.head(conv) if conv else None
    request = ResponseRequested(
        conversation_id=conv or rid,
        response_id=rid,
        created_at=int(time.time()),
        model="m",
        input=[  # normalised, as the API stores it
            {
                "id": new_id("msg"),
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_text", "text": text}],
            }
        ],
        context_seq=head.seq if head else 0,
        previous_response_id=previous,
    )
    events = await nc.subscribe(response_stream_subject(rid))
    if head is None:
        seq = await store.append([request], expected_last_seq=0)
    else:
        seq = await store.append([request], head.seq, head.hash, head.tenant)
    sub = await js.pull_subscribe(
        conversation_filter(conv or rid),
        stream=STREAM_NAME,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=seq),
    )
    [msg] = await sub.fetch(1, timeout=5)
    return rid, msg, events


async def until_completed(events: Any) -> list[dict[str, Any]]:
    received = [json.loads((await events.next_msg(timeout=5)).data)]
    while received[-1]["type"] != "response.completed":
        received.append(json.loads((await events.next_msg(timeout=5)).data))
    return received


async def new_conversation(store: EventStore) -> str:
    conv = new_id("conv")
    await store.append([ConversationCreated(conversation_id=conv, created_at=1)], 0)
    return conv


def worker(nc: Any, js: Any, store: EventStore, provider: Recording) -> ModelWorker:
    """No projector: the reader folds the thread from the log (read-through)."""
    reader = ViewReader(MemoryViews(), 1.0, History(store))
    return ModelWorker(nc, js, store, reader, OneProvider(provider))


async def test_the_call_overlaps_the_claim_and_waits_for_it_to_publish(nats):
    nc, js = nats
    store = ClaimFault(nc, js, delay=0.3)
    provider = Recording()
    rid, msg, events = await deliver(nc, js, store)
    await worker(nc, js, store, provider).handle(msg)
    received = await until_completed(events)
    first = received[0]
    assert provider.called_at is not None and store.claimed_at is not None
    assert provider.called_at < store.claimed_at  # called while the claim was appended
    assert first["type"] == "response.created" and first["sequence_number"] == 0
    assert [e["sequence_number"] for e in received] == list(range(len(received)))
    assert received[-1]["response"]["output"][0]["content"][0]["text"] == "hello"
    # No head read: the claim was appended against the delivered request, the outcome
    # against the claim, and both were the thread's last events.
    assert store.heads == 0
    log = await js.pull_subscribe(conversation_filter(rid), stream=STREAM_NAME)
    stored = await log.fetch(10, timeout=2)
    assert [m.subject.rpartition(".")[2] for m in stored] == [
        "response_requested",
        "response_in_progress",
        "response_completed",
    ]
    chain = ChainVerifier()
    assert not any(chain.feed(m.metadata.sequence.stream, m.data) for m in stored)


async def test_a_lost_claim_cancels_the_call_and_publishes_nothing(nats):
    nc, js = nats
    store = ClaimFault(nc, js, delay=0.2, lose=True)
    provider = Recording(hang=True)
    rid, msg, events = await deliver(nc, js, store)
    await worker(nc, js, store, provider).handle(msg)  # the response is gone: nothing to do
    assert provider.called_at is not None and provider.cancelled
    with pytest.raises(asyncio.TimeoutError):
        await events.next_msg(timeout=0.5)
    head = await store.head(rid)
    assert head is not None and head.event_type == "ResponseDeleted"


async def test_a_claim_lost_to_an_unrelated_append_keeps_its_call(nats):
    """Metadata replaced on the conversation while the claim was appended: the claim is
    decided again on the new head, and the model call already running serves it; the
    upstream is asked once (a second ask costs a user money and time)."""
    nc, js = nats
    store = ClaimFault(nc, js, delay=0.1)
    conv = await new_conversation(store)
    store.interleave = MetadataReplaced(conversation_id=conv, metadata={"k": "v"})
    _, msg, events = await deliver(nc, js, store, conv)
    provider = Recording()
    await worker(nc, js, store, provider).handle(msg)
    received = await until_completed(events)
    assert store.claims == 2  # the first claim lost, the second won
    assert len(provider.calls) == 1
    assert [e["sequence_number"] for e in received] == list(range(len(received)))
    assert [e["type"] for e in received].count("response.created") == 1
    log = await js.pull_subscribe(conversation_filter(conv), stream=STREAM_NAME)
    stored = [m.subject.rpartition(".")[2] for m in await log.fetch(10, timeout=2)]
    assert stored == [
        "conversation_created",
        "response_requested",
        "metadata_replaced",
        "response_in_progress",
        "item_added",
        "item_added",
        "response_completed",
    ]


class CountingReader(ViewReader):
    """Counts the worker's reads of a conversation and its items."""

    reads = 0

    async def conversation_with_items(self, conversation_id: str, min_seq: int) -> Any:
        self.reads += 1
        return await super().conversation_with_items(conversation_id, min_seq)


async def counted_setup(nc: Any, js: Any) -> Any:
    """A conversation, and a worker whose reads of it are counted."""
    store = EventStore(nc, js)
    conv = await new_conversation(store)
    reader = CountingReader(MemoryViews(), 1.0, History(store))
    provider = Recording()
    return store, conv, reader, provider, ModelWorker(nc, js, store, reader, OneProvider(provider))


async def test_the_next_turn_uses_what_the_worker_knows_of_the_conversation(nats):
    """Turn 2 of a conversation, on the head turn 1's outcome left: the worker that
    finished turn 1 builds its context without reading the views, and what it knew
    equals the conversation folded from the log."""
    nc, js = nats
    store, conv, reader, provider, model_worker = await counted_setup(nc, js)
    for n in range(3):
        _, msg, _ = await deliver(nc, js, store, conv, f"turn {n}")
        await model_worker.handle(msg)
    assert reader.reads == 1  # turn 0 only
    texts = [str(item["content"]) for item in provider.calls[2].items]
    assert len(texts) == 5 and "turn 0" in texts[0] and "turn 2" in texts[4]
    assert "hello" in texts[1] and "hello" in texts[3]  # the assistant turns

    folded = MemoryViews()
    await fold_log(store, folded)
    view, items = model_worker.memory.get(conv, (await store.head(conv)).seq) or (None, None)
    assert view is not None and view.model_dump() == folded.data[conversation_key(conv)]
    assert items == await ViewReader(folded).all_items(view)


async def test_a_turn_after_another_change_reads_the_views(nats):
    """Something else on the thread after the outcome (metadata here): the request's
    context_seq is not what the worker knew, so it reads the conversation."""
    nc, js = nats
    store, conv, reader, provider, model_worker = await counted_setup(nc, js)
    _, msg, _ = await deliver(nc, js, store, conv, "turn 0")
    await model_worker.handle(msg)
    head = await store.head(conv)
    assert head is not None
    await store.append(
        [MetadataReplaced(conversation_id=conv, metadata={"k": "v"})], head.seq, head.hash
    )
    _, msg, _ = await deliver(nc, js, store, conv, "turn 1")
    await model_worker.handle(msg)
    assert reader.reads == 2
    assert len(provider.calls[1].items) == 3


async def test_a_previous_response_is_read_as_of_its_thread_head(nats):
    """The previous response finished a moment ago and the views do not have it yet (here:
    none at all): the worker folds its thread from the log instead of failing the request
    with "previous response not found"."""
    nc, js = nats
    store = EventStore(nc, js)
    provider = Recording()
    model_worker = worker(nc, js, store, provider)  # its views stay empty
    first, msg, _ = await deliver(nc, js, store, text="Hi, I am Ada.")
    await model_worker.handle(msg)
    _, msg, events = await deliver(nc, js, store, text="and then?", previous=first)
    await model_worker.handle(msg)
    assert (await until_completed(events))[-1]["response"]["status"] == "completed"
    texts = [str(item["content"]) for item in provider.calls[1].items]
    assert len(texts) == 3 and "Ada" in texts[0] and "hello" in texts[1] and "then" in texts[2]


async def test_the_terminal_event_hands_the_thread_head_to_the_relaying_replica(nats):
    """A response on a conversation ends with the conversation's head after its outcome in
    the terminal event's header, exactly the log's head; the API's LiveEvents hands it to
    its store, which then appends the next request without reading the head. A response on
    a thread of its own carries none (nobody appends a next turn to it)."""
    nc, js = nats
    store = EventStore(nc, js)
    conv = await new_conversation(store)
    rid, msg, events = await deliver(nc, js, store, conv)
    api_store = EventStore(nc, js)
    live = LiveEvents(nc, js, rid, partial(api_store.learn_head, conv))
    await live.start()
    try:
        await worker(nc, js, store, Recording()).handle(msg)
        received = [await events.next_msg(timeout=5)]
        while json.loads(received[-1].data)["type"] != "response.completed":
            received.append(await events.next_msg(timeout=5))
        async for batch in live.frames():
            if any(frame.type == "response.completed" for frame in batch):
                break
    finally:
        await live.close()
    assert all(not m.headers for m in received[:-1])  # only the terminal event has one
    handed = parse_head_header(received[-1].headers[HEAD_HEADER])
    head = await store.head(conv)
    assert handed == Head(head.seq, head.event_id, head.event_type, head.hash, head.tenant)
    assert handed.event_type == "ResponseCompleted"
    assert api_store.appended_head(conv) == handed

    _, msg, events = await deliver(nc, js, store)  # no conversation
    await worker(nc, js, store, Recording()).handle(msg)
    last = await events.next_msg(timeout=5)
    while json.loads(last.data)["type"] != "response.completed":
        last = await events.next_msg(timeout=5)
    assert HEAD_HEADER not in (last.headers or {})
