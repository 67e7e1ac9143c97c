"""A conversation and its items in one read (the model worker's context), on a real KV
bucket and in memory."""

import asyncio
import secrets
from typing import Any

import pytest

from events.connection import connect
from projections.apply import Delete, PurgePrefix, Put
from projections.overlay import OverlayViews
from projections.reader import ProjectionLagging, ViewReader
from projections.store import KVViews, MemoryViews, open_bucket
from projections.views import conversation_key, item_key, ref_key


def conversation(cid: str, last_seq: int, items: int) -> dict[str, Any]:
    return {
        "id": cid,
        "created_at": 1,
        "last_seq": last_seq,
        "next_item_pos": items,
        "position": 0,
    }


def changes(cid: str, last_seq: int, items: int, deleted: set[int]) -> list[Any]:
    out: list[Any] = [Put(conversation_key(cid), conversation(cid, last_seq, items))]
    for pos in range(items):
        if pos in deleted:
            out.append(Delete(item_key(cid, pos)))
        else:
            out.append(Put(item_key(cid, pos), {"id": f"msg_{pos}", "pos": pos}))
    # Keys of the conversation that are not items, and a longer item count a later
    # fold will commit (stored before its conversation view): neither is in the context.
    out.append(Put(ref_key(cid, "msg_0"), {"pos": 0}))
    out.append(Put(item_key(cid, items), {"id": "uncommitted", "pos": items}))
    return out


@pytest.fixture
async def kv_views(nats_url: str) -> Any:
    nc = await connect([nats_url], "test-conversation-read")
    js = nc.jetstream()
    bucket = f"test_views_{secrets.token_hex(4)}"
    kv = await open_bucket(js, bucket)
    yield KVViews(js, kv, bucket)
    await js.delete_key_value(bucket)
    await nc.close()


async def test_a_conversation_and_its_items_in_one_read(kv_views):
    cid = f"conv_{secrets.token_hex(8)}"
    other = f"conv_{secrets.token_hex(8)}"
    await kv_views.write(changes(cid, 40, 6, deleted={2}))
    await kv_views.write(changes(other, 41, 3, deleted=set()))
    for views in (kv_views, await _in_memory(kv_views, [cid, other])):
        conv, items = await ViewReader(views).conversation_with_items(cid, 40)
        assert conv.id == cid and conv.next_item_pos == 6
        assert [i["pos"] for i in items] == [0, 1, 3, 4, 5]


async def test_it_waits_for_the_projector(kv_views):
    cid = f"conv_{secrets.token_hex(8)}"
    await kv_views.write(changes(cid, 10, 1, deleted=set()))
    reader = ViewReader(kv_views, wait_timeout=5)
    read = asyncio.create_task(reader.conversation_with_items(cid, 12))
    await asyncio.sleep(0.05)
    assert not read.done()
    await kv_views.write(changes(cid, 12, 2, deleted=set()))
    conv, items = await read
    assert conv.last_seq == 12 and [i["pos"] for i in items] == [0, 1]
    with pytest.raises(ProjectionLagging):
        await ViewReader(kv_views, wait_timeout=0.2).conversation_with_items(cid, 13)


async def test_a_conversation_too_long_for_one_read_is_read_in_pages(kv_views):
    """Over 1024 keys: the server refuses one multi_last, and the reader pages instead."""
    cid = f"conv_{secrets.token_hex(8)}"
    await kv_views.write(changes(cid, 5000, 1100, deleted={7}))
    assert await kv_views.get_matching([conversation_key(cid) + ".item.*"]) is None
    conv, items = await ViewReader(kv_views).conversation_with_items(cid, 5000)
    assert conv.next_item_pos == 1100
    assert [i["pos"] for i in items] == [p for p in range(1100) if p != 7]


async def _in_memory(kv_views: KVViews, cids: list[str]) -> MemoryViews:
    """The same views in memory: the reader reads both alike."""
    memory = MemoryViews()
    for cid in cids:
        found = await kv_views.get_matching([conversation_key(cid), conversation_key(cid) + ".>"])
        assert found is not None
        await memory.write([Put(k, v) for k, v in found.items()])
    return memory


async def test_an_overlay_answers_matching_keys_with_its_own_changes():
    """A read-through overlay's folded changes win over the stored keys, deleted and purged
    keys are gone, and keys it added match too."""
    cid = "conv_overlay"
    stored = MemoryViews()
    await stored.write(changes(cid, 7, 3, deleted=set()))
    overlay = OverlayViews(stored)
    await overlay.write(
        [
            Put(conversation_key(cid), conversation(cid, 9, 4)),
            Delete(item_key(cid, 1)),
            Put(item_key(cid, 3), {"id": "msg_3", "pos": 3}),
        ]
    )
    conv, items = await ViewReader(overlay).conversation_with_items(cid, 9)
    assert conv.last_seq == 9 and [i["pos"] for i in items] == [0, 2, 3]
    await overlay.write([PurgePrefix(conversation_key(cid) + ".")])
    found = await overlay.get_matching([conversation_key(cid) + ".item.*"])
    assert found == {}
