"""Reads fold the last few events themselves when the views lag, instead of waiting.

These run an API with NO projector: every view the API serves here was folded by the
read itself, from the log, over what the views bucket holds (here: nothing, or an
older state folded by hand).
"""

import time
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from events.chain import GENESIS
from events.history import History
from events.schema import (
    ConversationCreated,
    ItemAdded,
    ItemDeleted,
    MetadataReplaced,
    decode,
)
from events.store import EventStore
from projections.fold import Folder
from projections.reader import READ_THROUGH_MAX, ProjectionLagging, ViewReader
from projections.store import KVViews, MemoryViews, open_bucket
from projections.views import conversation_key
from tests.servers import Service, free_port
from tests.test_projector import message


def text(n: int) -> dict:
    return {"type": "message", "role": "user", "content": f"m{n}"}


@pytest.fixture
def lone_api(fresh_nats: str, tmp_path: Path):
    """An API on a server where no projector runs; reads wait at most 1 s."""
    port = free_port()
    env = {"CONVSTORE_READ_WAIT_TIMEOUT": "1"}
    api = Service(["api", "--nats-url", fresh_nats, "--port", str(port)], tmp_path / "api.log", env)
    api.start()
    url = f"http://127.0.0.1:{port}"
    api.wait_http(url)
    yield url
    api.stop()


def test_reads_right_after_writes_need_no_projector(lone_api: str) -> None:
    client = OpenAI(base_url=f"{lone_api}/v1", api_key="any", max_retries=0)
    conv = client.conversations.create(metadata={"k": "v"}, items=[text(0), text(1)])
    added = client.conversations.items.create(conv.id, items=[text(2), text(3)])
    client.conversations.update(conv.id, metadata={"k": "w"})
    client.conversations.items.delete(added.data[0].id, conversation_id=conv.id)

    assert client.conversations.retrieve(conv.id).metadata == {"k": "w"}
    page = client.conversations.items.list(conv.id, order="asc")
    assert [i.content[0].text for i in page.data] == ["m0", "m1", "m3"]
    # the cursor's position comes from the folded tail too, not from the (empty) views
    rest = client.conversations.items.list(conv.id, order="asc", after=page.data[0].id)
    assert [i.content[0].text for i in rest.data] == ["m1", "m3"]
    assert client.conversations.items.retrieve(added.data[1].id, conversation_id=conv.id).id
    with pytest.raises(openai.NotFoundError):
        client.conversations.items.retrieve(added.data[0].id, conversation_id=conv.id)
    desc = client.conversations.items.list(conv.id, limit=2)
    assert [i.content[0].text for i in desc.data] == ["m3", "m1"] and desc.has_more

    client.conversations.delete(conv.id)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conv.id)


def test_a_view_too_far_behind_is_waited_for_not_folded(lone_api: str) -> None:
    client = OpenAI(base_url=f"{lone_api}/v1", api_key="any", max_retries=0)
    conv = client.conversations.create()
    for start in range(0, READ_THROUGH_MAX, 20):  # ConversationCreated + 64 items
        batch = [text(n) for n in range(start, min(start + 20, READ_THROUGH_MAX))]
        client.conversations.items.create(conv.id, items=batch)
    began = time.monotonic()
    r = httpx.get(f"{lone_api}/v1/conversations/{conv.id}/items")
    assert r.status_code == 503, r.text  # nothing folds the views: the wait runs out
    assert r.json()["error"]["type"] == "server_error"
    assert 0.9 < time.monotonic() - began < 5


async def test_a_folded_tail_equals_the_projectors_fold(store: EventStore) -> None:
    """Stored views at an older position plus the tail folded by the read give exactly
    the views a fold of the whole log gives."""
    conv = "conv_tail"
    items = [message(f"i{n}") for n in range(6)]
    events = [
        ConversationCreated(conversation_id=conv, created_at=1, metadata={"a": "1"}),
        *[ItemAdded(conversation_id=conv, item=i) for i in items[:3]],
        ItemDeleted(conversation_id=conv, item_id=items[1]["id"]),
        MetadataReplaced(conversation_id=conv, metadata={"a": "2"}),
        *[ItemAdded(conversation_id=conv, item=i) for i in items[3:]],
        ItemDeleted(conversation_id=conv, item_id=items[4]["id"]),
    ]
    seq = await store.append(events, 0, GENESIS, "default")
    history = History(store)
    stored, _ = await history.page(conv, 0, 100)
    decoded = [decode(e.data, e.seq) for e in stored]
    whole = MemoryViews()
    await Folder(whole).fold(decoded)

    js = store.js
    bucket = "views_tail"
    kv = KVViews(js, await open_bucket(js, bucket), bucket)
    await Folder(kv).fold(decoded[:3])  # the projector got this far
    reader = ViewReader(kv, wait_timeout=0.5, history=history)
    view, at = await reader.caught_up(conv, stored[-1].seq)
    assert view.model_dump() == whole.data[conversation_key(conv)]
    page = await at.items(view, None, 20, "asc")
    assert [i["id"] for i in page.data] == [items[n]["id"] for n in (0, 2, 3, 5)]
    for n in range(6):
        assert await at.item(conv, items[n]["id"]) == (None if n in (1, 4) else items[n])
    # nothing was written to the bucket: it still holds the projector's older state
    assert (await kv.get(conversation_key(conv)))["last_seq"] == stored[2].seq

    # Without a log to read, the same read waits for the projector, and gives up.
    with pytest.raises(ProjectionLagging):
        await ViewReader(kv, wait_timeout=0.3).caught_up(conv, stored[-1].seq)
    assert seq == stored[-1].seq


def test_responses_are_read_through_too(lone_api: str) -> None:
    """No projector and no model worker: a queued background response, on its own thread
    and on a conversation, is retrieved, listed and cancelled from the log alone."""
    client = OpenAI(base_url=f"{lone_api}/v1", api_key="any", max_retries=0)
    conv = client.conversations.create()
    for extra in ({}, {"conversation": conv.id}):
        r = client.responses.create(model="echo", input="queued", background=True, **extra)
        assert r.status == "queued"
        assert client.responses.retrieve(r.id).status == "queued"
        inputs = client.responses.input_items.list(r.id)
        assert [i.content[0].text for i in inputs.data] == ["queued"]
        assert client.responses.cancel(r.id).status == "cancelled"
        assert client.responses.retrieve(r.id).status == "cancelled"


def test_a_response_on_a_conversation_needs_no_projector(fresh_nats: str, tmp_path: Path) -> None:
    """The model worker reads its context as reads do: the conversation's last few events
    folded from the log when the views lag (here: no projector at all), not waited for."""
    port = free_port()
    env = {"CONVSTORE_READ_WAIT_TIMEOUT": "1", "CONVSTORE_MODELS": ""}
    api = Service(["api", "--nats-url", fresh_nats, "--port", str(port)], tmp_path / "api.log", env)
    worker = Service(["worker", "--nats-url", fresh_nats], tmp_path / "worker.log", env)
    api.start()
    worker.start()
    try:
        url = f"http://127.0.0.1:{port}"
        api.wait_http(url)
        client = OpenAI(base_url=f"{url}/v1", api_key="any", max_retries=0, timeout=20)
        conv = client.conversations.create(items=[text(0), text(1)])
        first = client.responses.create(model="m", conversation=conv.id, input="a")
        assert first.status == "completed"
        assert first.output_text == "echo: a (context: 3 messages)"
        second = client.responses.create(model="m", conversation=conv.id, input="b")
        assert second.output_text == "echo: b (context: 5 messages)"
    finally:
        worker.stop()
        api.stop()


class CountingHistory(History):
    """The log as reads see it, counting how often they read it."""

    pages = 0

    async def page(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.pages += 1
        return await super().page(*args, **kwargs)


async def test_a_view_one_event_short_folds_the_head_it_read(store: EventStore) -> None:
    """A read right after a one-event write: the head read already holds that event, and
    its message names the conversation's sequence before it. A stored view at exactly
    that sequence needs only the head folded on top: no read of the log."""
    conv = "conv_head"
    items = [message(f"i{n}") for n in range(5)]
    created = ConversationCreated(conversation_id=conv, created_at=1)
    await store.append(
        [created, ItemAdded(conversation_id=conv, item=items[0])], 0, GENESIS, "default"
    )
    history = CountingHistory(store)
    js = store.js
    kv = KVViews(js, await open_bucket(js, "views_head"), "views_head")
    folder = Folder(kv)

    async def project() -> None:  # the projector catches up with the whole log
        stored, _ = await History(store).page(conv, 0, 100)
        await folder.fold([decode(e.data, e.seq) for e in stored])

    async def append_alone(event: ItemAdded | ItemDeleted) -> None:
        head = await store.head(conv)
        assert head is not None
        await store.append([event], head.seq, head.hash, "default")

    await project()
    reader = ViewReader(kv, wait_timeout=0.3, history=history)
    before = await store.head(conv)
    await append_alone(ItemAdded(conversation_id=conv, item=items[1]))
    head = await store.head(conv)
    assert head is not None and before is not None
    assert head.prev_seq == before.seq and head.data

    view, at = await reader.caught_up(conv, store.head(conv))  # the head read in flight
    assert history.pages == 0
    assert view.last_seq == head.seq and view.next_item_pos == 2
    page = await at.items(view, None, 20, "asc")
    assert [i["id"] for i in page.data] == [items[0]["id"], items[1]["id"]]
    # the same answer as from the log's tail (a position without the head's bytes)
    from_log, at_log = await reader.caught_up(conv, head.seq)
    assert history.pages == 1 and from_log == view
    assert (await at_log.items(from_log, None, 20, "asc")).data == page.data

    # Two events short (a batch): the head alone is not enough, the log is read.
    batch = [ItemAdded(conversation_id=conv, item=i) for i in items[2:4]]
    await store.append(batch, head.seq, head.hash, "default")
    head = await store.head(conv)
    assert head is not None and head.prev_seq is None
    history.pages = 0
    view, _ = await reader.caught_up(conv, head)
    assert history.pages == 1 and view.next_item_pos == 4

    # A deletion appended alone, over views that caught up: folded from the head.
    await project()
    await append_alone(ItemDeleted(conversation_id=conv, item_id=items[2]["id"]))
    head = await store.head(conv)
    assert head is not None
    history.pages = 0
    view, at = await reader.caught_up(conv, head)
    assert history.pages == 0 and view.last_seq == head.seq
    assert await at.item(conv, items[2]["id"]) is None
    assert await at.item(conv, items[3]["id"]) == items[3]
    # nothing was written: the bucket still holds the projector's state
    assert (await kv.get(conversation_key(conv)))["last_seq"] == head.prev_seq
