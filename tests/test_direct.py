"""Batched direct gets share one inbox subscription per connection."""

import asyncio

from events.connection import connect
from events.direct import _replies, direct_batch
from projections.store import KVViews, open_bucket


async def test_concurrent_batches_each_get_their_own_messages(fresh_nats: str) -> None:
    nc = await connect([fresh_nats], "test")
    js = nc.jetstream()
    views = KVViews(js, await open_bucket(js, "direct_test"), "direct_test")
    for n in range(50):
        await views.kv.put(f"k.{n}", f'{{"n": {n}}}'.encode())
    subs_before = len(nc._subs)

    async def page(start: int) -> list:
        return await views.get_many([f"k.{n}" for n in range(start, start + 5)] + ["k.none"])

    pages = await asyncio.gather(*(page(start) for start in range(0, 45)))
    for start, found in enumerate(pages):
        assert found == [{"n": n} for n in range(start, start + 5)] + [None]
    # one shared subscription, opened by the first batch; nothing left registered
    assert len(nc._subs) == subs_before + 1
    assert _replies[nc].handlers == {}
    # a batch that finds nothing ends with the server's 404 status, not a timeout
    assert await direct_batch(nc, "KV_direct_test", {"multi_last": ["x"], "batch": 1}, 2) == []
    await nc.close()
