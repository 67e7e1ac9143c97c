"""The projection worker: a FastStream subscriber folding the log into KV views.

It reads the event stream through one durable pull consumer in batches, in log
order, and acks a batch only after its views are written, so a crash at any
point redelivers what was not yet applied (and re-applying is harmless).
"""

import asyncio
import logging
from typing import Annotated

from faststream import AckPolicy, Context
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsMessage
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from events.connection import connect
from events.schema import Event, decode
from events.store import ensure_stream
from events.subjects import ALL_EVENTS, STREAM_NAME
from projections.fold import Folder
from projections.store import KVViews, open_bucket

log = logging.getLogger("convstore.projector")

DURABLE = "projector"
BATCH = 256  # events per fold when reading the log directly (rebuild)
ACK_WAIT = 10.0  # seconds before an unacked event is redelivered


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


def register_projector(broker: NatsBroker, folder: Folder, durable: str = DURABLE) -> None:
    """Attach the projector's subscriber to `broker` (views must be open in `folder`)."""

    @broker.subscriber(
        ALL_EVENTS,
        stream=JStream(name=STREAM_NAME, declare=False),
        durable=durable,
        # max_ack_pending=1: the server hands out the next event only after this one is
        # acked, so an event lost in flight is redelivered before anything that follows
        # it (never overtaken, which the last_seq guard would then skip).
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL, ack_wait=ACK_WAIT, max_ack_pending=1
        ),
        # One message per fetch: FastStream hands a larger non-batch fetch to concurrent
        # tasks (out of order), and its batch mode waits out the whole fetch timeout.
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        ack_policy=AckPolicy.MANUAL,
    )
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


async def run_projector(
    nats_urls: list[str], stop: asyncio.Event, replicas: int = 1, durable: str = DURABLE
) -> None:
    """Run the projector until `stop` is set: its own NATS connections, nothing shared."""
    nc = await connect(nats_urls, "convstore-projector")
    js = nc.jetstream()
    await ensure_stream(js, replicas=replicas)
    kv = await open_bucket(js, replicas=replicas)
    broker = NatsBroker(nats_urls, max_reconnect_attempts=-1, reconnect_time_wait=0.5)
    register_projector(broker, Folder(KVViews(js, kv)), durable)
    await broker.start()
    log.info("projector running on durable consumer %r", durable)
    try:
        await stop.wait()
    finally:
        await broker.stop()
        await nc.drain()
