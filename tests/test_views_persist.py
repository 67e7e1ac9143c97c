"""Views buckets stored with `persist_mode: async` (no fsync, acknowledged before the
disk): how they are written, and how the projector repairs the writes a crashed
nats-server lost."""

import asyncio
import shutil
import time
from pathlib import Path

from nats.js.api import KeyValueConfig, PersistMode, StorageType

from convstore.embedded_nats import EmbeddedNats
from events.connection import connect
from events.schema import ItemAdded
from events.store import EventStore, ensure_stream
from projections.apply import Delete, PurgePrefix, Put
from projections.rebuild import fold_log
from projections.store import BUCKET, KVViews, MemoryViews, open_bucket, open_views
from projections.worker import run_projector
from tests.test_projector import append_at_head, kv_snapshot, message, wait_caught_up, write_history


async def test_views_buckets_are_made_async_and_written_without_batches(store):
    js = store.js
    kv = await open_views(js, "async_views")
    config = (await js.stream_info("KV_async_views")).config
    assert config.persist_mode == PersistMode.ASYNC
    assert config.allow_direct and config.allow_rollup_hdrs and config.max_msgs_per_subject == 1
    assert kv is not None and (await js.key_value("async_views")).__class__.__name__ == "KeyValue"
    # other buckets (idempotency records, the views pointer) keep the server's fsync
    await open_bucket(js, "kept_bucket")
    assert (await js.stream_info("KV_kept_bucket")).config.persist_mode in (None, "default")

    views = KVViews(js, kv, "async_views")
    expected = MemoryViews()
    for changes in (
        [Put(f"conv.c{n % 7}.item.{n:012d}", {"n": n}) for n in range(2500)],  # > a batch
        [Delete("conv.c1.item.000000000001"), PurgePrefix("conv.c2."), Put("x", {"y": 1})],
        [Delete(f"conv.c3.item.{n:012d}") for n in range(3, 2500, 7)],
    ):
        await views.write(changes)
        await expected.write(changes)
    assert await kv_snapshot(js, "async_views") == expected.data
    # nats-server refuses atomic batches on an async stream: none was asked for
    assert not (await js.stream_info("KV_async_views")).config.allow_atomic


async def test_an_async_views_bucket_is_the_bucket_nats_py_makes_but_for_persist_mode(store):
    """`open_views` restates the stream nats-py's `create_key_value` makes, since
    KeyValueConfig cannot set `persist_mode`: an upgrade of nats-py that changes its
    buckets' configuration shows here, not as a subtly different views bucket."""
    js = store.js
    await open_views(js, "ours")
    await js.create_key_value(
        KeyValueConfig(
            bucket="theirs", history=1, storage=StorageType.FILE, replicas=1, direct=True
        )
    )
    ours = (await js.stream_info("KV_ours")).config.as_dict()
    theirs = (await js.stream_info("KV_theirs")).config.as_dict()
    assert ours.pop("persist_mode") == "async"
    assert theirs.pop("persist_mode", "default") == "default"
    assert ours.pop("subjects") == ["$KV.ours.>"] and theirs.pop("subjects") == ["$KV.theirs.>"]
    assert ours.pop("name") == "KV_ours" and theirs.pop("name") == "KV_theirs"
    # the server's own notes (its version, the API level a feature needs: 2 for async)
    for config in (ours, theirs):
        config["metadata"] = {
            k: v for k, v in (config.get("metadata") or {}).items() if not k.startswith("_nats.")
        }
    assert ours == theirs


async def test_views_lost_behind_a_write_are_folded_again(store):
    """The bucket's stream stands before a write the projector had acknowledged (here it
    was dropped and made again, empty): the projector's next write notices (ViewsLost)
    and folds the log again from the checkpoint the bucket still holds."""
    js = store.js
    stop = asyncio.Event()
    url = store.nc.connected_url.geturl()
    projector = asyncio.create_task(run_projector([url], stop))
    try:
        ids = await write_history(store, seed=3, conversations=3)
        await wait_caught_up(js, store)
        await js.delete_stream(f"KV_{BUCKET}")
        await open_views(js, BUCKET)
        await append_at_head(store, ids[1], [ItemAdded(conversation_id=ids[1], item=message("x"))])
        await wait_caught_up(js, store)
    finally:
        stop.set()
        await projector
    memory = MemoryViews()
    await fold_log(store, memory)
    assert await kv_snapshot(js) == memory.data


async def _restarted(nats: EmbeddedNats, store: EventStore) -> None:
    """Start the server again and wait until the test's own connection is back."""
    nats.start()
    deadline = time.monotonic() + 20
    while True:
        try:
            await store.last_seq()
            return
        except Exception:
            assert time.monotonic() < deadline, "the test's connection did not come back"
            await asyncio.sleep(0.1)


def _views_dir(data_dir: Path) -> Path:
    (found,) = data_dir.glob(f"jetstream/**/streams/KV_{BUCKET}")
    return found


async def test_a_restarted_server_that_lost_view_writes_is_caught_up(tmp_path):
    """nats-server comes back with the views bucket of an earlier moment (what a crash
    loses with `persist_mode: async`: the tail, checkpoint included) and no event is
    written after: the projector, reconnected, folds again from that checkpoint."""
    nats = EmbeddedNats(tmp_path / "nats", sync_always=True)
    nats.start()
    stop = asyncio.Event()
    nc = await connect([nats.url], "test")
    js = nc.jetstream()
    await ensure_stream(js)
    store = EventStore(nc, js)
    # a lease that outlives the outages: this projector keeps leading (a shorter one
    # would step down, and the next leader starts from the stored checkpoint anyway)
    projector = asyncio.create_task(run_projector([nats.url], stop, lease_ttl=60))
    saved = tmp_path / "views_before"
    try:
        ids = await write_history(store, seed=4, conversations=3)
        await wait_caught_up(js, store)
        nats.stop()
        views_dir = _views_dir(nats.data_dir)
        shutil.copytree(views_dir, saved)
        await _restarted(nats, store)
        for conv in ids[1:]:
            await append_at_head(store, conv, [ItemAdded(conversation_id=conv, item=message("y"))])
        await wait_caught_up(js, store)
        nats.stop()
        shutil.rmtree(views_dir)
        shutil.copytree(saved, views_dir)
        await _restarted(nats, store)
        memory = MemoryViews()
        await fold_log(store, memory)
        deadline = time.monotonic() + 20
        while await kv_snapshot(js) != memory.data:
            assert time.monotonic() < deadline, "the projector never folded the lost tail"
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await projector
        await nc.close()
        nats.stop()
