"""KVViews' small writes: pipelined publishes that land in order, all or a prefix."""

import pytest
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import APIError

from projections.apply import Delete, Put
from projections.store import KVViews
from tests.test_projector import kv_snapshot


async def test_a_small_write_lands_whole_and_follows_other_writers(store):
    js = store.js
    kv = await js.create_key_value(KeyValueConfig(bucket="small_writes", direct=True))
    views = KVViews(js, kv, "small_writes")
    await views.write([Put("a", {"n": 1}), Put("b", {"n": 2}), Put("c", {"n": 3})])
    await views.write([Delete("b"), Put("a", {"n": 4})])
    await kv.put("c", b'{"n": 5}')  # another writer moves the stream on (a purge's marker)
    await views.write([Put("d", {"n": 6})])
    assert await kv_snapshot(js, "small_writes") == {"a": {"n": 4}, "c": {"n": 5}, "d": {"n": 6}}


@pytest.mark.parametrize("refused", [0, 1, 3])
async def test_a_refused_message_leaves_a_prefix(store, refused):
    js = store.js
    bucket = f"prefix_writes_{refused}"
    kv = await js.create_key_value(
        KeyValueConfig(bucket=bucket, direct=True, max_value_size=300, storage=StorageType.FILE)
    )
    views = KVViews(js, kv, bucket)
    changes = [Put(f"k{n}", {"n": n}) for n in range(5)]
    changes[refused] = Put(f"k{refused}", {"big": "x" * 1000})  # over the bucket's limit
    with pytest.raises(APIError):
        await views.write(changes)
    assert await kv_snapshot(js, bucket) == {f"k{n}": {"n": n} for n in range(refused)}
    await views.write([Put("after", {"ok": True})])  # the next write still goes through
    assert (await views.get("after")) == {"ok": True}
