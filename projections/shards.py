"""A rebuild's fold split over processes by conversation, so it uses more than one core.

One process folds at most one core's worth of events (decoding them is pydantic, folding
them Python), while nats-server needs well under the other core to serve the read and
the view writes. So `rebuild` folds the log in `shards` processes at once: each reads
the whole log, skips by subject (no decoding) the events of conversations another shard
owns, and writes only its own conversations' keys into the new bucket. Every shard also
folds every ConversationCreated, since a conversation's position in its tenant's index
is the count of those before it; the tenants' counters are written by shard 0 alone.
The checkpoint is written once all shards are done, by `rebuild`.

Several writers of one bucket cannot confirm their writes by the stream's position as a
single one does (`BulkViews`): each confirms them by an acknowledged marker key of its
own instead (a connection's messages are stored in the order sent), and `rebuild` checks
at the end that the bucket holds exactly as many messages as the shards sent.
"""

import argparse
import asyncio
import json
import sys
import zlib
from collections.abc import Callable
from typing import Any

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from events import codec
from events.connection import connect
from events.store import EventStore
from events.subjects import subject_token
from projections.apply import Change, PurgePrefix, Put
from projections.bulk_views import BulkViews
from projections.fold import Folder
from projections.store import ViewStore, open_views
from projections.views import is_index_key

CREATED = subject_token("ConversationCreated")
MARKERS = "rebuild.shard"  # key prefix of the shards' markers, purged once they are done


def shard_of(conversation_id: str, shards: int) -> int:
    """Which shard owns a conversation (or a response thread): stable across processes."""
    return zlib.crc32(conversation_id.encode()) % shards


def wanted(shard: int, shards: int) -> Callable[[str], bool]:
    """A filter on subjects (`conv.<id>.<type>`): the events this shard folds."""

    def keep(subject: str) -> bool:
        _, conversation_id, kind = subject.split(".", 2)
        return kind == CREATED or shard_of(conversation_id, shards) == shard

    return keep


class ShardViews:
    """A ViewStore that writes only the keys `shard` owns: those of its conversations
    (`conv.<id>...`, `resp.<thread>...`, their index entries) and, on shard 0, the
    tenants' index counters. The other shards keep the counters they computed here, and
    read them back from here: the folder's cache may have dropped them, and the store
    never gets them from this shard."""

    def __init__(self, views: ViewStore, shard: int, shards: int) -> None:
        self.views = views
        self.shard = shard
        self.shards = shards
        self._counters: dict[str, dict[str, Any]] = {}

    async def get(self, key: str) -> dict[str, Any] | None:
        if key in self._counters:
            return self._counters[key]
        return await self.views.get(key)

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        if not any(k in self._counters for k in keys):
            return await self.views.get_many(keys)
        return [await self.get(k) for k in keys]

    async def get_matching(self, patterns: list[str]) -> dict[str, dict[str, Any]] | None:
        return await self.views.get_matching(patterns)

    async def write(self, changes: list[Change]) -> None:
        mine = []
        for change in changes:
            if self._mine(change):
                mine.append(change)
            elif isinstance(change, Put) and is_index_key(change.key):
                self._counters[change.key] = change.value
        await self.views.write(mine)

    def _mine(self, change: Change) -> bool:
        key = change.prefix if isinstance(change, PurgePrefix) else change.key
        kind, _, rest = key.partition(".")
        if kind in ("conv", "resp"):
            return shard_of(rest.partition(".")[0], self.shards) == self.shard
        if kind == "index":
            if "." not in rest:  # the tenant's counter
                return self.shard == 0
            if isinstance(change, Put):  # an entry, named by the conversation it holds
                return shard_of(change.value["id"], self.shards) == self.shard
            return True  # an entry's removal: only its own conversation's events remove it
        return True


class SharedBulkViews(BulkViews):
    """BulkViews for one of several writers of a new bucket: `flush` puts this writer's
    marker key with an acknowledgement, after which every key sent before it is stored
    (or was refused, which only the final count shows: `rebuild` checks it)."""

    def __init__(
        self, js: JetStreamContext, kv: KeyValue, bucket: str, writer: int, timeout: float = 5.0
    ) -> None:
        super().__init__(js, kv, bucket, timeout)
        self.marker = f"$KV.{bucket}.{MARKERS}.{writer}"

    async def _stored_up_to(self, behind: int) -> None:
        if self._sent - self._stored <= behind:
            return
        self._sent += 1  # the marker itself is a message of the bucket
        body = codec.dumps({"sent": self._sent})
        await self.js.publish(self.marker, body, timeout=self.timeout, stream=self.stream)
        self._stored = self._sent


async def fold_shard(
    store: EventStore,
    kv: KeyValue,
    bucket: str,
    shard: int,
    shards: int,
    up_to: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Fold this shard's part of the log up to `up_to` into `bucket`; returns how many
    messages it added to the bucket's stream (its keys and markers)."""
    from projections.rebuild import fold_log  # here: rebuild imports this module

    views = SharedBulkViews(store.js, kv, bucket, shard, timeout=store.timeout)
    folder = Folder(ShardViews(views, shard, shards), fresh=True, checkpointing=False)
    await fold_log(
        store, views, up_to=up_to, folder=folder, subjects=wanted(shard, shards), progress=progress
    )
    await views.flush()
    return views._sent


async def _main(args: argparse.Namespace) -> None:
    nc = await connect(args.nats_url.split(","), f"convstore-rebuild-shard-{args.shard}")
    try:
        js = nc.jetstream(timeout=args.timeout)
        store = EventStore(nc, js, args.timeout)
        kv = await open_views(js, args.bucket, args.replicas)
        sent = await fold_shard(store, kv, args.bucket, args.shard, args.shards, args.up_to)
        print(json.dumps({"shard": args.shard, "sent": sent}), flush=True)
    finally:
        await nc.drain()


def main(argv: list[str] | None = None) -> None:
    """`python -m projections.shards`: one shard of a rebuild, started by `rebuild`."""
    p = argparse.ArgumentParser(prog="python -m projections.shards")
    p.add_argument("--nats-url", required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--up-to", type=int, required=True)
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--timeout", type=float, default=5.0)
    args = p.parse_args(argv)
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
