"""The projection worker: a FastStream subscriber folding the log into KV views.

It reads the event stream through one durable pull consumer in batches, in log
order, and acks a batch only after its views are written, so a crash at any
point redelivers what was not yet applied (and re-applying is harmless).
"""

import asyncio
import contextlib
import logging
import warnings
from collections.abc import Awaitable
from typing import Annotated, Any

from faststream import AckPolicy, Context
from faststream.nats import JStream, NatsBroker
from faststream.nats.message import NatsMessage
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue
from pydantic import ValidationError

from events.connection import connect
from events.schema import Event, decode
from events.store import ensure_stream
from events.subjects import ALL_EVENTS, STREAM_NAME
from projections.active import DEFAULT_DURABLE, POLL, Generation, current, meta_bucket
from projections.fold import Folder
from projections.store import KVViews, open_bucket

log = logging.getLogger("convstore.projector")

DURABLE = DEFAULT_DURABLE
BATCH = 256  # events per fold when reading the log directly (rebuild)
# Seconds before an unacked event is redelivered: a delivery lost in a crash or a
# shutdown holds up the fold (one event in flight) for at most this long.
ACK_WAIT = 2.0


def decode_batch(messages: list[Msg]) -> list[Event]:
    """Events of a fetched batch; a message that is not a valid event is logged and skipped."""
    events: list[Event] = []
    for m in messages:
        seq = m.metadata.sequence.stream
        try:
            events.append(decode(m.data, seq))
        except ValidationError:
            log.error("skipping undecodable message at seq %d on %s", seq, m.subject)
    return events


async def close_quietly(closing: Awaitable[Any], timeout: float = 5.0) -> None:
    """Shut a client down without hanging or raising while NATS is away."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(closing, timeout)


def register_projector(broker: NatsBroker, folder: Folder, durable: str = DURABLE) -> None:
    """Attach the projector's subscriber to `broker` (views must be open in `folder`)."""

    with warnings.catch_warnings():
        # It warns that a durable push consumer does not scale across instances: one
        # projector per consumer is exactly what ordered folding needs.
        warnings.filterwarnings("ignore", "The JetStream Push consumer", RuntimeWarning)
        subscriber = broker.subscriber(
            ALL_EVENTS,
            stream=JStream(name=STREAM_NAME, declare=False),
            durable=durable,
            # A push consumer with max_ack_pending=1: the server hands out the next event
            # only after this one is acked, so the fold sees the log strictly in order and
            # an event lost in flight is redelivered before anything that follows it.
            # (FastStream's pull loop drops fetched messages when nats-py raises a plain
            # asyncio.TimeoutError, stalling such a consumer until ack_wait.)
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.ALL, ack_wait=ACK_WAIT, max_ack_pending=1
            ),
            ack_policy=AckPolicy.MANUAL,
        )

    @subscriber
    async def project(_: bytes, msg: Annotated[NatsMessage, Context("message")]) -> None:
        events = decode_batch([msg.raw_message])
        delay = 0.05
        while True:
            try:
                await folder.fold(events)
                break
            except Exception:
                # NATS hiccup: keep the batch (and the order) and try again.
                log.exception("fold failed; retrying in %.2fs", delay)
                await msg.raw_message.in_progress()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        await msg.ack()


async def run_projector(nats_urls: list[str], stop: asyncio.Event, replicas: int = 1) -> None:
    """Run the projector until `stop` is set, following the views pointer.

    When `rebuild` flips the pointer to a new bucket and consumer, the projector
    stops its subscriber and starts again on the new generation.
    """
    nc = await connect(nats_urls, "convstore-projector")
    js = nc.jetstream()
    await ensure_stream(js, replicas=replicas)
    meta = await meta_bucket(js, replicas)
    try:
        while not stop.is_set():
            generation = await current(meta)
            kv = await open_bucket(js, bucket=generation.bucket, replicas=replicas)
            broker = NatsBroker(nats_urls, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
            register_projector(
                broker, Folder(KVViews(js, kv, generation.bucket)), generation.durable
            )
            await broker.start()
            log.info("projecting into %s from consumer %r", generation.bucket, generation.durable)
            try:
                await _until_stop_or_flip(stop, meta, generation)
            finally:
                await close_quietly(broker.stop())
    finally:
        await close_quietly(nc.drain())
        await close_quietly(nc.close())


async def _until_stop_or_flip(stop: asyncio.Event, meta: KeyValue, generation: Generation) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), POLL)
        with contextlib.suppress(Exception):  # NATS away: keep going on what we have
            if await current(meta) != generation:
                return
