"""A range of the event log read in order, as fast as one process can: a rebuild's input.

An ephemeral push consumer (no acks, flow control, idle heartbeats) delivers to a plain
subscription on a connection of the reader's own, which skips the events' headers
(`headerless`). This is what nats-py's ordered consumer does, minus its per-message
bookkeeping (~1 µs of an event's ~7 µs read): the reader answers the server's flow control
itself and checks the consumer sequence of every delivery; a lost one (a reconnect, a
dropped message) starts a new consumer right after the last event it kept.
"""

import asyncio
import contextlib
from functools import partial
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from events.connection import connect, headerless
from events.delivery import delivery
from events.store import EventStore
from events.subjects import ALL_EVENTS, STREAM_NAME

FOLD_BATCH = 1000  # events per fold when replaying the log
READ_AHEAD = 4 * FOLD_BATCH  # events read and buffered ahead of the fold
HEARTBEAT = 5.0  # seconds between the server's idle heartbeats
PENDING = 512 * 1024  # deliveries nats-py queues for the callback (it drops the rest)
_CONTROL = "100"  # the status of flow control requests and idle heartbeats
_STALLED = "Nats-Consumer-Stalled"  # a heartbeat's: the flow control reply it waits for


class LogReader:
    """The log from `after + 1` to `end` in a bounded buffer, filled while the previous
    batch is being folded; the server stops (flow control) while the buffer is full."""

    def __init__(self, store: EventStore, after: int, end: int) -> None:
        self.store = store
        self.after = after
        self.end = end
        self._buffer: list[Msg] = []
        self._seqs: list[int] = []  # the buffered messages' stream sequences
        self._kept = after  # the stream sequence of the last message kept
        self._next = 1  # the consumer sequence the next delivery must have
        # Deliveries of an older consumer (queued when it was replaced) are ignored.
        self._generation = 0
        self._restarting: asyncio.Task[None] | None = None
        self._stalls = 0  # restarts in a row without a delivery
        self.restarts = 0  # consumers replaced after a lost delivery or a stall
        self.flow_controls = 0  # the server's flow control requests answered
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._done = False  # the message at or past `end`, or the log's last, arrived
        self._nc: NATS | None = None
        self._js: JetStreamContext | None = None
        self._sub: Any = None
        self._consumer: str | None = None

    async def __aenter__(self) -> "LogReader":
        servers = [url.geturl() for url in self.store.nc.servers]
        self._nc = headerless(await connect(servers, "convstore-log-reader"))
        self._js = self._nc.jetstream(timeout=self.store.timeout)
        try:
            await self._start()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._nc.close(), 5.0)

    async def _start(self) -> None:
        """A consumer from the event after the last one kept, delivering to a new inbox."""
        assert self._nc is not None and self._js is not None
        inbox = self._nc.new_inbox()
        self._generation += 1
        self._next = 1
        self._sub = await self._nc.subscribe(
            inbox, cb=partial(self._deliver, self._generation), pending_msgs_limit=PENDING
        )
        info = await self._js.add_consumer(
            STREAM_NAME,
            ConsumerConfig(
                deliver_subject=inbox,
                filter_subject=ALL_EVENTS,
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE if self._kept else DeliverPolicy.ALL,
                opt_start_seq=self._kept + 1 if self._kept else None,
                ack_policy=AckPolicy.NONE,
                max_deliver=1,
                flow_control=True,
                idle_heartbeat=HEARTBEAT,
                inactive_threshold=60,
                mem_storage=True,
                num_replicas=1,
            ),
        )
        self._consumer = info.name

    async def _stop(self) -> None:
        sub, consumer, self._sub, self._consumer = self._sub, self._consumer, None, None
        with contextlib.suppress(Exception):
            if sub is not None:
                await sub.unsubscribe()
        with contextlib.suppress(Exception):
            if consumer is not None and self._js is not None:
                await self._js.delete_consumer(STREAM_NAME, consumer)

    async def _restart(self) -> None:
        """Deliveries were lost: read on from the last message kept, on a new consumer."""
        self._generation += 1
        self.restarts += 1
        await self._stop()
        await self._start()

    async def _deliver(self, generation: int, msg: Msg) -> None:
        if not msg.data and msg.headers and msg.headers.get("Status") == _CONTROL:
            # A flow control request (answered: the messages before it are delivered) or
            # a heartbeat, which names the request the server is stalled on, if any.
            reply = msg.reply or msg.headers.get(_STALLED)
            if reply and self._nc is not None:
                await self._nc.publish(reply, b"")
                self.flow_controls += 1
            return
        if self._done or generation != self._generation:
            return
        seq, consumer_seq, pending = delivery(msg)
        if consumer_seq != self._next:
            self._generation += 1  # ignore the rest of this consumer's deliveries
            self._restarting = asyncio.ensure_future(self._restart())  # not from in here
            return
        self._next += 1
        self._stalls = 0
        if seq > self.end:
            self._done = True  # `end` itself is gone (erased meanwhile): stop before it
        else:
            self._buffer.append(msg)
            self._seqs.append(seq)
            self._kept = seq
            self._done = seq == self.end or pending == 0
        self._arrived.set()
        while len(self._buffer) >= READ_AHEAD:
            self._room.clear()
            await self._room.wait()

    async def take(self, limit: int) -> tuple[list[Msg], list[int]]:
        """Up to `limit` buffered messages in log order and their stream sequences; empty
        lists once the range is read."""
        while not self._buffer and not self._done:
            if self._restarting is not None and self._restarting.done():
                restarted, self._restarting = self._restarting, None
                restarted.result()  # a failed restart fails the read
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
        """No delivery for a while: done if the consumer has nothing left to send and sent
        nothing this reader lacks (the range was erased); else it is read again from a new
        consumer (this one may be gone: a restarted server), and after that an error (the
        server does not deliver)."""
        assert self._js is not None and self._consumer is not None
        try:
            info = await self._js.consumer_info(STREAM_NAME, self._consumer)
        except NotFoundError:
            info = None
        if info is not None and not info.num_pending and info.delivered.stream_seq <= self._kept:
            return True
        if self._stalls:
            raise nats.errors.TimeoutError
        self._stalls += 1
        await self._restart()
        return False
