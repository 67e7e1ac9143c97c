"""Rebuild views from sequence 1 while everything keeps serving.

The new generation (bucket + durable consumer) is folded from the log beside the
live one, caught up, and then the views pointer is flipped: projectors move to
the new consumer, which starts right after the last event the rebuild folded, and
readers move to the new bucket. The old generation is then dropped.
"""

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from events.connection import connect, headerless
from events.delivery import position
from events.schema import Event
from events.store import EventStore
from events.subjects import ALL_EVENTS, STREAM_NAME
from projections.active import POLL, Generation, current, flip, meta_bucket
from projections.bulk_views import BulkViews
from projections.fold import Folder
from projections.store import BUCKET, ViewStore, open_bucket
from projections.worker import ACK_WAIT, MAX_IN_FLIGHT, close_quietly, decode_batch

CATCH_UP_GAP = 100  # flip once the new views are this close to the log's end


FOLD_BATCH = 1000  # events per fold when replaying the log
READ_AHEAD = 4 * FOLD_BATCH  # events read and buffered ahead of the fold


class LogReader:
    """The log from `after + 1` to `end`, read by an ordered push consumer into a bounded
    buffer while the previous batch is being folded and written.

    A push consumer delivers from a callback with no per-message future or timer (what a
    pull `fetch` costs), and its flow control stops the server while the buffer is full.
    It reads on a connection of its own that skips the events' headers (`headerless`):
    the fold needs only their data, subjects and positions.
    """

    def __init__(self, store: EventStore, after: int, end: int) -> None:
        self.store = store
        self.after = after
        self.end = end
        self._buffer: list[Msg] = []
        self._seqs: list[int] = []  # the buffered messages' stream sequences
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._done = False  # the message at or past `end`, or the log's last, arrived
        self._sub: Any = None
        self._nc: NATS | None = None

    async def __aenter__(self) -> "LogReader":
        servers = [url.geturl() for url in self.store.nc.servers]
        self._nc = headerless(await connect(servers, "convstore-log-reader"))
        js = self._nc.jetstream(timeout=self.store.timeout)
        try:
            self._sub = await js.subscribe(
                ALL_EVENTS,
                stream=STREAM_NAME,
                cb=self._deliver,
                ordered_consumer=True,
                config=ConsumerConfig(
                    deliver_policy=(
                        DeliverPolicy.BY_START_SEQUENCE if self.after else DeliverPolicy.ALL
                    ),
                    opt_start_seq=self.after + 1 if self.after else None,
                    inactive_threshold=60,
                ),
            )
        except BaseException:
            await close_quietly(self._nc.close())
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        with contextlib.suppress(Exception):
            await self._sub.unsubscribe()
        if self._nc is not None:
            await close_quietly(self._nc.close())

    async def _deliver(self, msg: Msg) -> None:
        if self._done:
            return
        seq, pending = position(msg)
        if seq > self.end:
            self._done = True  # `end` itself is gone (erased meanwhile): stop before it
        else:
            self._buffer.append(msg)
            self._seqs.append(seq)
            self._done = seq == self.end or pending == 0
        self._arrived.set()
        if len(self._buffer) >= READ_AHEAD:
            self._room.clear()
            await self._room.wait()

    async def take(self, limit: int) -> tuple[list[Msg], list[int]]:
        """Up to `limit` buffered messages in log order and their stream sequences; empty
        lists once the range is read."""
        while not self._buffer and not self._done:
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), self.store.timeout)
            except TimeoutError:
                if await self._nothing_pending():
                    return [], []
        batch, self._buffer = self._buffer[:limit], self._buffer[limit:]
        seqs, self._seqs = self._seqs[:limit], self._seqs[limit:]
        if len(self._buffer) < READ_AHEAD:
            self._room.set()
        return batch, seqs

    async def _nothing_pending(self) -> bool:
        """No delivery for a while: done if the consumer has nothing left to send (the
        range was erased), an error if it has (the server does not deliver)."""
        info = await self._sub.consumer_info()
        if info.num_pending:
            raise nats.errors.TimeoutError
        return True


async def fold_log(
    store: EventStore,
    views: ViewStore,
    *,
    after: int = 0,
    up_to: int | None = None,
    folder: Folder | None = None,
    keep: Callable[[Event], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Fold the events after `after` up to `up_to` (default: the log's end now).

    Returns the last sequence folded (`after` when there was nothing to fold).
    """
    end = await store.last_seq() if up_to is None else up_to
    if end <= after:
        return after
    folder = folder or Folder(views)
    seq = after
    async with LogReader(store, after, end) as reader:
        while seq < end:
            batch, seqs = await reader.take(FOLD_BATCH)
            if not batch:
                break
            events = decode_batch(batch, seqs)
            await folder.fold(events if keep is None else [e for e in events if keep(e)])
            seq = seqs[-1]
            if progress:
                progress(len(batch))
    return seq


async def rebuild(
    store: EventStore,
    replicas: int = 1,
    progress: Callable[[int], None] | None = None,
    live: Callable[[], None] | None = None,
) -> tuple[int, Generation]:
    """Build a new views generation from the whole log and make it the live one, then
    drop the old one once projectors and readers had time to move over (`live` is called
    in between: from then on the new views serve).

    Returns the last sequence the rebuild folded itself and the new generation.
    """
    js = store.js
    meta = await meta_bucket(js, replicas)
    old = await current(meta)
    suffix = secrets.token_hex(4)
    new = Generation(bucket=f"{BUCKET}_{suffix}", durable=f"projector_{suffix}")
    kv = await open_bucket(js, bucket=new.bucket, replicas=replicas)
    # Nobody reads the new bucket before the flip, and only this folder writes it: keys
    # stored behind the next fold, confirmed by the stream's position; views it never
    # wrote are absent.
    views = BulkViews(js, kv, new.bucket, timeout=store.timeout)
    folder = Folder(views, fresh=True)
    last = await fold_log(store, views, folder=folder, progress=progress)
    while await store.last_seq() - last > CATCH_UP_GAP:
        last = await fold_log(store, views, after=last, folder=folder, progress=progress)
    await views.flush()
    await js.add_consumer(
        STREAM_NAME,
        ConsumerConfig(
            durable_name=new.durable,
            deliver_subject=f"_CONVSTORE.deliver.{new.durable}",  # a push consumer
            filter_subject=ALL_EVENTS,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=last + 1,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT,
            max_ack_pending=MAX_IN_FLIGHT,
        ),
    )
    await flip(meta, new)
    if live:
        live()
    await asyncio.sleep(2 * POLL + 0.5)  # let projectors and readers move over
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(STREAM_NAME, old.durable)
    if old.bucket != new.bucket:
        with contextlib.suppress(NotFoundError):
            await js.delete_key_value(old.bucket)
    return last, new
