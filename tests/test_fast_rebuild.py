"""The rebuild's fast paths against a real nats-server: atomic batches of views, bulk writes
confirmed by the stream behind the fold (as atomic batches into a bucket stored with fsync,
as plain puts into one stored with `persist_mode: async`), a fresh single-phase folder, the
ordered-consumer log reader."""

import dataclasses

import pytest
from nats.js.errors import NotFoundError

from events.schema import ConversationCreated, ItemAdded
from events.store import EventStore
from events.subjects import STREAM_NAME
from projections import rebuild as rebuild_module
from projections import store as store_module
from projections.apply import Delete, PurgePrefix, Put
from projections.bulk_views import BulkViews, ViewsNotStored
from projections.fold import Folder
from projections.rebuild import fold_log
from projections.store import KVViews, MemoryViews, _async_kv_stream, open_bucket, open_views
from tests.test_projector import kv_snapshot, message, write_history


@pytest.mark.parametrize("raw", [True, False], ids=["protocol-bytes", "publish"])
async def test_kv_writes_cross_the_atomic_batch_limit(store, monkeypatch, raw):
    js = store.js
    assert store_module.RAW_PUBLISH, "nats-py changed: the rebuild publishes one by one"
    monkeypatch.setattr(store_module, "RAW_PUBLISH", raw)
    kv = await open_bucket(js, bucket="atomic_views")
    views = KVViews(js, kv, "atomic_views")
    expected = MemoryViews()
    puts = [Put(f"conv.c{n % 7}.item.{n:012d}", {"n": n}) for n in range(2500)]
    raw = [Put("conv.raw", {"a": "é"})]
    for changes in (
        puts + raw,
        [Delete("conv.c1.item.000000000001"), PurgePrefix("conv.c2."), Put("x", {"y": 1})],
        [Delete(f"conv.c3.item.{n:012d}") for n in range(3, 2500, 7)],  # deletes only
    ):
        await views.write(changes)
        await expected.write(changes)
    assert (await js.stream_info("KV_atomic_views")).config.allow_atomic
    assert await kv_snapshot(js, "atomic_views") == expected.data
    assert await views.get_many(["conv.raw", "x", "conv.c1.item.000000000001"]) == [
        {"a": "é"},
        {"y": 1},
        None,
    ]


BUCKETS = pytest.mark.parametrize(
    "open_", [open_bucket, open_views], ids=["fsynced-bucket", "async-bucket"]
)


@BUCKETS
@pytest.mark.parametrize("raw", [True, False], ids=["protocol-bytes", "publish"])
async def test_bulk_writes_are_read_back_and_confirmed_by_the_stream(
    store, monkeypatch, raw, open_
):
    monkeypatch.setattr(store_module, "RAW_PUBLISH", raw)
    js = store.js
    kv = await open_(js, "bulk")
    views = BulkViews(js, kv, "bulk", timeout=2, in_flight=1500)
    for n in range(6):
        await views.write([Put(f"k{n}.{i}", {"n": n, "i": i}) for i in range(1200)])
    assert await views.get("k5.1199") == {"n": 5, "i": 1199}  # a read waits for the writes
    await views.write([Delete("k5.1199"), Put("k0.0", {"again": True})])
    await views.flush()
    snapshot = await kv_snapshot(js, "bulk")
    assert len(snapshot) == 6 * 1200 - 1
    assert snapshot["k0.0"] == {"again": True}


@BUCKETS
async def test_a_purge_waits_for_the_bulk_writes_before_it(store, open_):
    """A purge is a JetStream API request, served beside the stream's inbound messages: sent
    while earlier keys are still on their way, it could run first and leave them behind
    (a purged conversation's items surviving a rebuild)."""
    js = store.js
    kv = await open_(js, "bulk_purge")
    views = BulkViews(js, kv, "bulk_purge", in_flight=1_000_000)
    for round_ in range(3):
        await views.write([Put(f"conv.c{round_}.item.{i:06d}", {"i": i}) for i in range(5000)])
        await views.write([PurgePrefix(f"conv.c{round_}."), Put(f"conv.c{round_}", {"r": 1})])
    await views.flush()
    assert await kv_snapshot(js, "bulk_purge") == {f"conv.c{r}": {"r": 1} for r in range(3)}


async def test_a_key_the_server_refuses_fails_the_flush(store):
    js = store.js
    kv = await js.create_key_value(bucket="bulk_small", max_value_size=256)
    views = BulkViews(js, kv, "bulk_small", timeout=0.5)
    await views.write([Put("fits", {"a": 1})])
    await views.flush()  # stored (0.5 s is only how long a refused batch is waited for)
    await views.write([Put("b", {}), Put("too_big", {"a": "x" * 300})])  # one atomic batch
    with pytest.raises(ViewsNotStored, match="2 of 3 keys"):
        await views.flush()
    assert await kv_snapshot(js, "bulk_small") == {"fits": {"a": 1}}


async def test_a_key_an_async_bucket_refuses_fails_the_flush(store):
    """No batches there: the keys before the refused one land, and the count stops short."""
    js = store.js
    config = dataclasses.replace(_async_kv_stream("bulk_small_async", 1, None), max_msg_size=256)
    await js.add_stream(config)
    kv = await js.key_value("bulk_small_async")
    views = BulkViews(js, kv, "bulk_small_async", timeout=0.5)
    await views.write([Put("b", {}), Put("too_big", {"a": "x" * 300})])
    with pytest.raises(ViewsNotStored, match="1 of 2 keys"):
        await views.flush()
    assert await kv_snapshot(js, "bulk_small_async") == {"b": {}}


@BUCKETS
async def test_another_writer_of_the_bucket_fails_the_flush(store, open_):
    js = store.js
    kv = await open_(js, "bulk_shared")
    views = BulkViews(js, kv, "bulk_shared", timeout=1)
    await views.write([Put("mine", {"a": 1})])
    await kv.put("theirs", b"{}")
    await kv.put("theirs2", b"{}")
    with pytest.raises(ViewsNotStored, match="another writer"):
        await views.flush()


@BUCKETS
async def test_a_fresh_single_phase_fold_equals_the_phased_one(store, monkeypatch, open_):
    js = store.js
    await write_history(store, seed=5, conversations=5)  # creates, adds, deletes, a purge
    expected = MemoryViews()
    await fold_log(store, expected)

    # small batches and a tiny cache: views are evicted, refs read back across batches
    monkeypatch.setattr(rebuild_module, "FOLD_BATCH", 7)
    kv = await open_(js, "fresh_fold")
    views = BulkViews(js, kv, "fresh_fold", in_flight=20)
    folder = Folder(views, cache_size=3, fresh=True)
    last = await fold_log(store, views, folder=folder)
    await views.flush()
    assert last == await store.last_seq()
    assert await kv_snapshot(js, "fresh_fold") == expected.data


async def test_fold_log_reads_exactly_its_range(store):
    for n in range(3):
        conv = f"conv_range{n}"
        items = [ItemAdded(conversation_id=conv, item=message(f"m{k}")) for k in range(9)]
        await store.append([ConversationCreated(conversation_id=conv, created_at=n), *items], 0)
    end = await store.last_seq()
    seen: list[int] = []

    def keep(event: object) -> bool:
        seen.append(event.seq)  # type: ignore[attr-defined]
        return True

    assert await fold_log(store, MemoryViews(), after=4, up_to=21, keep=keep) == 21
    assert seen == list(range(5, 22))
    assert await fold_log(store, MemoryViews(), after=end) == end


async def test_fold_log_ends_when_its_last_events_were_erased(store):
    conv = "conv_erased"
    items = [ItemAdded(conversation_id=conv, item=message(f"m{k}")) for k in range(5)]
    await store.append([ConversationCreated(conversation_id=conv, created_at=1), *items], 0)
    end = await store.last_seq()
    for seq in (end, end - 1):
        await store.js.delete_msg(STREAM_NAME, seq)
    quick = EventStore(store.nc, store.js, timeout=1)
    assert await fold_log(quick, MemoryViews(), up_to=end) == end - 2
    assert await fold_log(quick, MemoryViews(), after=end - 2, up_to=end) == end - 2
    with pytest.raises(NotFoundError):
        await store.js.get_msg(STREAM_NAME, end)
