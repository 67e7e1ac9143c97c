"""The projection worker against a real nats-server: redelivery, rebuild, identical views."""

import asyncio
import json
import random

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events import commands
from events.connection import cancel_for_sure
from events.history import History
from events.items import normalize_item
from events.schema import (
    ConversationCreated,
    ConversationDeleted,
    ItemAdded,
    ItemDeleted,
    MetadataReplaced,
)
from projections.fold import Folder
from projections.reader import ViewReader
from projections.rebuild import fold_log, rebuild
from projections.store import BUCKET, KVViews, MemoryViews, open_bucket
from projections.worker import Projector, decode_batch, run_projector


async def kv_snapshot(js, bucket: str = BUCKET) -> dict[str, dict]:
    """Every live key of a bucket, read from its stream (last message per key)."""
    info = await js.stream_info(f"KV_{bucket}")
    if info.state.messages == 0:
        return {}
    sub = await js.pull_subscribe(
        f"$KV.{bucket}.>",
        stream=f"KV_{bucket}",
        config=ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.LAST_PER_SUBJECT
        ),
    )
    out: dict[str, dict] = {}
    try:
        while True:
            msgs = await sub.fetch(256, timeout=1)
            for m in msgs:
                key = m.subject.removeprefix(f"$KV.{bucket}.")
                if (m.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
                    continue
                out[key] = json.loads(m.data)
            if msgs[-1].metadata.num_pending == 0:
                return out
    finally:
        await sub.unsubscribe()


async def append_at_head(store, conversation_id: str, events: list) -> int:
    head = await store.head(conversation_id)
    return await store.append(events, head.seq, head.hash)


def message(text: str) -> dict:
    return normalize_item(
        {"type": "message", "role": "user", "content": text}, "items[0]", 1, "conv_x"
    )


async def write_history(store, seed: int = 7, conversations: int = 8) -> list[str]:
    """A mixed history through the real append path: creates, items, deletes, updates."""
    rng = random.Random(seed)
    ids = []
    for n in range(conversations):
        created = ConversationCreated(conversation_id=f"conv_t{seed}x{n}", created_at=n)
        await commands.create(
            store,
            [created, ItemAdded(conversation_id=created.conversation_id, item=message("first"))],
        )
        ids.append(created.conversation_id)
    items: dict[str, list[str]] = {c: [] for c in ids}
    for step in range(150):
        conv = rng.choice(ids)
        roll = rng.random()
        if roll < 0.6:
            batch = [message(f"s{step}.{k}") for k in range(rng.randint(1, 4))]
            await append_at_head(
                store, conv, [ItemAdded(conversation_id=conv, item=i) for i in batch]
            )
            items[conv] += [i["id"] for i in batch]
        elif roll < 0.8 and items[conv]:
            victim = items[conv].pop(rng.randrange(len(items[conv])))
            await append_at_head(store, conv, [ItemDeleted(conversation_id=conv, item_id=victim)])
        else:
            await append_at_head(
                store, conv, [MetadataReplaced(conversation_id=conv, metadata={"s": str(step)})]
            )
    gone = ids[0]
    await append_at_head(store, gone, [ConversationDeleted(conversation_id=gone)])
    return ids


async def wait_caught_up(js, store, bucket: str = BUCKET, timeout: float = 30) -> None:
    kv = await open_bucket(js, bucket=bucket)
    reader = ViewReader(KVViews(js, kv, bucket), wait_timeout=timeout)
    await reader.wait_checkpoint(await store.last_seq())


async def test_live_projection_equals_fold_and_rebuild(store):
    js = store.js
    stop = asyncio.Event()
    projector = asyncio.create_task(run_projector([store.nc.connected_url.geturl()], stop))
    try:
        ids = await write_history(store)
        await wait_caught_up(js, store)
    finally:
        stop.set()
        await projector
    live = await kv_snapshot(js)
    assert f"conv.{ids[1]}" in live and live[f"conv.{ids[0]}"]["deleted"] is True
    assert not any(k.startswith(f"conv.{ids[0]}.") for k in live)  # its items purged

    memory = MemoryViews()
    await fold_log(store, memory)
    assert memory.data == live

    last, generation = await rebuild(store)
    assert last == await store.last_seq()
    assert generation.bucket != BUCKET
    assert await kv_snapshot(js, generation.bucket) == live

    # the rebuilt consumer continues after the rebuild: new writes still project
    stop = asyncio.Event()
    projector = asyncio.create_task(run_projector([store.nc.connected_url.geturl()], stop))
    try:
        await append_at_head(
            store, ids[1], [MetadataReplaced(conversation_id=ids[1], metadata={"after": "1"})]
        )
        await wait_caught_up(js, store, generation.bucket)
        kv = await open_bucket(js, bucket=generation.bucket)
        view = await ViewReader(KVViews(js, kv, generation.bucket)).conversation(ids[1])
        assert view is not None and view.metadata == {"after": "1"}
    finally:
        stop.set()
        await projector


async def test_redelivered_events_change_nothing(store):
    js = store.js
    await write_history(store, seed=11, conversations=3)
    kv = await open_bucket(js)
    events = []
    memory = MemoryViews()
    await fold_log(store, memory)
    sub = await js.pull_subscribe(
        "conv.>",
        stream="CONVSTORE",
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
    )
    while len(events) < await store.last_seq():
        events += decode_batch(await sub.fetch(256, timeout=2))
    await sub.unsubscribe()

    folder = Folder(KVViews(js, kv))
    await folder.fold(events)
    once = await kv_snapshot(js)
    assert once == memory.data
    # a fresh folder (no cache, as after a restart) gets the same events again
    await Folder(KVViews(js, kv)).fold(events[len(events) // 2 :])
    await Folder(KVViews(js, kv)).fold(events)
    assert await kv_snapshot(js) == once


async def test_projector_folds_in_log_order_whatever_the_delivery_order(store):
    """Dropped, duplicated and reordered deliveries: the fold fills gaps from the log."""
    await write_history(store, seed=3, conversations=4)
    expected = MemoryViews()
    await fold_log(store, expected)

    sub = await store.js.pull_subscribe(
        "conv.>",
        stream="CONVSTORE",
        config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
    )
    msgs = []
    while len(msgs) < await store.last_seq():
        msgs += await sub.fetch(256, timeout=2)
    await sub.unsubscribe()

    rng = random.Random(5)
    delivered = [m for m in msgs if rng.random() > 0.3]  # ~30% never delivered
    delivered += rng.sample(delivered, 20)  # some twice
    rng.shuffle(delivered)
    views = MemoryViews()
    projector = Projector(Folder(views), History(store))
    for start in range(0, len(delivered), 17):
        await projector._flush(delivered[start : start + 17])
    await projector._flush(msgs[-1:])  # the last event arrives at the end
    assert views.data == expected.data


async def test_cancel_for_sure_stops_a_loop_that_swallowed_a_cancel():
    # What Python 3.11's wait_for does when a cancel comes as its result arrives.
    woke = asyncio.Event()

    async def loop() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            pass  # swallowed
        woke.set()
        await asyncio.Event().wait()  # the flush loop waiting for the next delivery

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_for_sure(task), 5)
    assert woke.is_set() and task.cancelled()
