"""The projection worker: a FastStream subscriber folding the log into KV views.

Deliveries from one durable consumer are buffered and folded in batches (whatever
arrived while the previous batch was being written), strictly in log order: every
stream sequence is an event, so a batch that does not start right after the
checkpoint is completed from the log itself before it is folded. Delivery order,
redeliveries and lost deliveries therefore cannot reorder or drop anything; a
batch is acked only after its views are written, and re-applying is harmless.

Several projector processes may run: they elect one leader (projections/leader.py),
and only the leader subscribes and writes views.
"""

import asyncio
import contextlib
import logging
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker
from faststream.nats.message import NatsMessage
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

from events.connection import cancel_for_sure, connect, fast_headers
from events.delivery import stream_seq
from events.history import History
from events.schema import Event, Unrecognized, decode_lenient
from events.store import EventStore, ensure_stream
from events.subjects import ALL_EVENTS, STREAM_NAME
from projections.active import DEFAULT_DURABLE, POLL, Generation, current, meta_bucket
from projections.fold import Folder
from projections.leader import LEASE_TTL, Lease, holder_id
from projections.store import KVViews, open_views

log = logging.getLogger("convstore.projector")

DURABLE = DEFAULT_DURABLE
BATCH = 256  # events per fold when reading the log directly (rebuild)
MAX_IN_FLIGHT = 1024  # deliveries the server sends ahead of our acks
ACK_WAIT = 30.0  # seconds before an unacked delivery is sent again
RECHECK = 1.0  # seconds between looks at the connection's reconnects while idle


def decode_batch(messages: list[Msg], seqs: list[int] | None = None) -> list[Event | Unrecognized]:
    """Events of a fetched batch (`seqs`: their stream sequences, when the caller read
    them already); one this version cannot read is logged and folded as a no-op
    (Unrecognized)."""
    events: list[Event | Unrecognized] = []
    for i, m in enumerate(messages):
        seq = seqs[i] if seqs is not None else stream_seq(m)
        event = decode_lenient(m.data, seq, m.subject)
        if isinstance(event, Unrecognized):
            log.error("unrecognized message at seq %d on %s", event.seq, m.subject)
        events.append(event)
    return events


async def close_quietly(closing: Awaitable[Any], timeout: float = 5.0) -> None:
    """Shut a client down without hanging or raising while NATS is away."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(closing, timeout)


class Projector:
    """Folds buffered deliveries in log order, filling any gap from the log.

    What it knows of its views (the checkpoint, the folder's cache) it forgets after a
    failed fold and after `connection` reconnected, and reads them again: views are
    stored without fsync (`open_views`), so a nats-server that crashed may have lost
    the last writes it acknowledged, checkpoint included, and those events are folded
    again from the stored checkpoint on."""

    def __init__(self, folder: Folder, history: History, connection: NATS | None = None) -> None:
        self.folder = folder
        self.history = history
        self.connection = connection
        self.checkpoint: int | None = None
        self._buffer: list[Msg] = []
        self._wake = asyncio.Event()
        self._reconnects = self._reconnect_count()

    def deliver(self, msg: Msg) -> None:
        self._buffer.append(msg)
        self._wake.set()

    async def run(self) -> None:
        """Flush loop: one fold per wake-up, covering everything delivered meanwhile."""
        await self._retrying(self.catch_up, [])
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RECHECK):
                    await self._wake.wait()
            if self._reconnect_count() != self._reconnects:
                self._reconnects = self._reconnect_count()
                self.forget()
                await self._retrying(self.catch_up, [])
            if not self._wake.is_set():
                continue
            self._wake.clear()
            batch, self._buffer = self._buffer, []
            await self._flush(batch)

    def forget(self) -> None:
        """Read the checkpoint and the views from the store again."""
        self.checkpoint = None
        self.folder.forget()

    def _reconnect_count(self) -> int:
        return int(self.connection.stats["reconnects"]) if self.connection else 0

    async def catch_up(self) -> None:
        """Fold what the log holds past the checkpoint now. After a crash or a takeover,
        the deliveries the previous projector left unacked come back only after
        ack_wait; without this, the views would wait for them or for the next write."""
        if self.checkpoint is None:
            self.checkpoint = await self.folder.checkpoint()
        end = await self.history.store.last_seq()
        while self.checkpoint < end:
            last = min(end, self.checkpoint + 4 * BATCH)
            events = await self._read(self.checkpoint + 1, last)
            if events:
                await self.folder.fold(events)
            self.checkpoint = last

    async def _flush(self, batch: list[Msg]) -> None:
        await self._retrying(lambda: self._fold(batch), batch)
        for m in batch:
            with contextlib.suppress(Exception):
                await m.ack()

    async def _retrying(self, fold: Callable[[], Awaitable[None]], batch: list[Msg]) -> None:
        delay = 0.05
        while True:
            try:
                await fold()
                return
            except Exception:
                # NATS hiccup: keep the batch (and the order) and try again, from what the
                # views hold then (they may have lost writes: ViewsLost).
                log.exception("fold failed; retrying in %.2fs", delay)
                self.forget()
                for m in batch:
                    with contextlib.suppress(Exception):
                        await m.in_progress()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def _fold(self, batch: list[Msg]) -> None:
        if self.checkpoint is None:
            self.checkpoint = await self.folder.checkpoint()
        fresh = {stream_seq(m): m for m in batch}
        events: list[Event | Unrecognized] = []
        expected = self.checkpoint + 1
        for seq in sorted(s for s in fresh if s > self.checkpoint):
            if seq > expected:  # not delivered (yet): read it from the log
                events += await self._read(expected, seq - 1)
            events += decode_batch([fresh[seq]])
            expected = seq + 1
        if events:
            await self.folder.fold(events)
            self.checkpoint = max(self.checkpoint, expected - 1)

    async def _read(self, first: int, last: int) -> list[Event | Unrecognized]:
        out: list[Event | Unrecognized] = []
        after = first - 1
        while after < last:
            page, more = await self.history.page(None, after, min(BATCH, last - after))
            for stored in (p for p in page if p.seq <= last):
                out.append(decode_lenient(stored.data, stored.seq, stored.subject))
            if not page or not more:
                break
            after = page[-1].seq
        return out


def register_projector(broker: NatsBroker, projector: Projector, durable: str = DURABLE) -> None:
    """Attach the projector's subscriber to `broker`: it only hands deliveries over."""

    with warnings.catch_warnings():
        # It warns that a durable push consumer does not scale across instances: one
        # projector per consumer is exactly what ordered folding needs.
        warnings.filterwarnings("ignore", "The JetStream Push consumer", RuntimeWarning)
        subscriber = broker.subscriber(
            ALL_EVENTS,
            stream=JStream(name=STREAM_NAME, declare=False),
            durable=durable,
            # A push consumer: the server streams deliveries ahead of our acks (a pull
            # loop in FastStream loses fetched messages on some nats-py timeouts).
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=ACK_WAIT,
                max_ack_pending=MAX_IN_FLIGHT,
            ),
            ack_policy=AckPolicy.MANUAL,
        )

    @subscriber
    async def project(_: bytes) -> None:
        # Without fast_depends (the broker's apply_types=False: ~1 ms of CPU per event,
        # beside the model worker on the same cores); the message is in FastStream's context.
        msg: NatsMessage = broker.context.get_local("message")
        projector.deliver(msg.raw_message)


async def run_projector(
    nats_urls: list[str], stop: asyncio.Event, replicas: int = 1, lease_ttl: float = LEASE_TTL
) -> None:
    """Run the projector until `stop` is set: stand by until this process holds the
    projector lease, then project while it holds it, following the views pointer.

    When `rebuild` flips the pointer to a new bucket and consumer, the projector
    stops its subscriber and starts again on the new generation.
    """
    nc = await connect(nats_urls, "convstore-projector")
    js = nc.jetstream()
    await ensure_stream(js, replicas=replicas)
    meta = await meta_bucket(js, replicas)
    store = EventStore(nc, js)
    lease = Lease(meta, holder_id(), lease_ttl)
    try:
        while await lease.acquire(stop):
            log.info("this projector (%s) holds the lease and writes the views", lease.holder)
            kept = asyncio.create_task(lease.keep())
            try:
                await _lead(nats_urls, js, meta, store, replicas, stop, kept)
            except Exception:  # NATS away while (re)starting: stand by, then try again
                log.exception("projector failed; trying again")
                await asyncio.sleep(1.0)
            finally:
                kept.cancel()
                with contextlib.suppress(BaseException):
                    await kept
    finally:
        await lease.release()
        await close_quietly(nc.drain())
        await close_quietly(nc.close())


async def _lead(
    nats_urls: list[str],
    js: JetStreamContext,
    meta: KeyValue,
    store: EventStore,
    replicas: int,
    stop: asyncio.Event,
    kept: "asyncio.Task[None]",
) -> None:
    """Project until `stop`, or until the lease is lost (`kept` ends)."""
    while not stop.is_set() and not kept.done():
        generation = await current(meta)
        kv = await open_views(js, generation.bucket, replicas)
        broker = NatsBroker(
            nats_urls,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            log_level=logging.DEBUG,  # per-message access logs only when debugging
            apply_types=False,
        )
        views = KVViews(js, kv, generation.bucket)
        projector = Projector(Folder(views), History(store), connection=store.nc)
        register_projector(broker, projector, generation.durable)
        flusher = asyncio.create_task(projector.run())
        try:
            fast_headers(await broker.connect())
            await broker.start()
            log.info("projecting into %s from consumer %r", generation.bucket, generation.durable)
            await _until_stop_flip_or_lost(stop, meta, generation, kept)
        finally:
            # Stop writing first: once the lease is lost, a successor may be starting.
            await cancel_for_sure(flusher)
            await close_quietly(broker.stop())


async def _until_stop_flip_or_lost(
    stop: asyncio.Event, meta: KeyValue, generation: Generation, kept: "asyncio.Task[None]"
) -> None:
    stopped = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set() and not kept.done():
            await asyncio.wait({stopped, kept}, timeout=POLL, return_when=asyncio.FIRST_COMPLETED)
            with contextlib.suppress(Exception):  # NATS away: keep going on what we have
                if not kept.done() and await current(meta) != generation:
                    return
    finally:
        stopped.cancel()
