"""A rebuild folded in several processes (projections/shards.py) builds the very views a
single fold builds, against a real nats-server."""

import pytest

from convstore.settings import Settings, usable_cores
from events import commands
from events.schema import ConversationCreated, ItemAdded
from projections.apply import Delete, PurgePrefix, Put
from projections.rebuild import fold_log, rebuild
from projections.shards import ShardViews, shard_of, wanted
from projections.store import MemoryViews
from tests.test_projector import kv_snapshot, message, write_history


@pytest.mark.parametrize("shards", [2, 3])
async def test_a_sharded_rebuild_equals_the_fold_of_the_log(store, shards):
    await write_history(store, seed=11, conversations=12)  # creates, adds, deletes, a purge
    for n in range(6):  # a second tenant: its own index positions
        created = ConversationCreated(conversation_id=f"conv_other{n}", created_at=n, tenant="t2")
        await commands.create(
            store, [created, ItemAdded(conversation_id=created.conversation_id, item=message("o"))]
        )
    owners = {shard_of(f"conv_t11x{n}", shards) for n in range(12)}
    assert owners == set(range(shards)), "every shard should own some of the conversations"
    expected = MemoryViews()
    await fold_log(store, expected)

    last, generation = await rebuild(store, shards=shards)
    assert last == await store.last_seq()
    assert await kv_snapshot(store.js, generation.bucket) == expected.data


async def test_a_shard_writes_only_its_own_keys():
    shards = 2
    mine = next(f"conv_{n}" for n in range(50) if shard_of(f"conv_{n}", shards) == 1)
    theirs = next(f"conv_{n}" for n in range(50) if shard_of(f"conv_{n}", shards) == 0)
    written = MemoryViews()
    views = ShardViews(written, 1, shards)
    await views.write(
        [
            Put(f"conv.{mine}", {"a": 1}),
            Put(f"conv.{mine}.item.000000000000", {"b": 1}),
            Put(f"conv.{theirs}", {"a": 2}),
            Put(f"resp.{mine}.resp_1", {"c": 1}),
            Put(f"resp.{theirs}.resp_2", {"c": 2}),
            Put("index.default.000000000003", {"id": mine}),
            Put("index.default.000000000004", {"id": theirs}),
            Put("index.default", {"count": 5, "last_seq": 9}),  # shard 0's
            Delete("index.default.000000000001"),  # only an own event removes an entry
        ]
    )
    await views.write([PurgePrefix(f"conv.{theirs}.")])
    assert set(written.data) == {
        f"conv.{mine}",
        f"conv.{mine}.item.000000000000",
        f"resp.{mine}.resp_1",
        "index.default.000000000003",
    }
    # the counter this shard computed but shard 0 writes is read back from the shard
    assert await views.get("index.default") == {"count": 5, "last_seq": 9}
    assert await views.get_many(["index.default", f"conv.{mine}"]) == [
        {"count": 5, "last_seq": 9},
        {"a": 1},
    ]
    keep = wanted(1, shards)
    assert keep(f"conv.{mine}.item_added") and keep(f"conv.{theirs}.conversation_created")
    assert not keep(f"conv.{theirs}.item_added")


def test_the_shard_setting(monkeypatch):
    monkeypatch.setenv("CONVSTORE_REBUILD_SHARDS", "3")
    assert Settings().rebuild_shard_count() == 3
    monkeypatch.setenv("CONVSTORE_REBUILD_SHARDS", "auto")
    assert Settings().rebuild_shard_count() == max(1, min(usable_cores(), 4))
    monkeypatch.delenv("CONVSTORE_REBUILD_SHARDS")
    assert Settings().rebuild_shard_count() == 1
