"""Runs model workers: a FastStream subscriber on the shared durable pull consumer.

Any number of processes share the consumer `model_workers`; each handles up to
`concurrency` responses at a time. A delivery is kept alive while its response runs
and acked only when the outcome is in the log (or there is nothing to do).
"""

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime

from faststream import AckPolicy
from faststream.nats import JStream, NatsBroker, PullSub
from faststream.nats.message import NatsMessage
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from events.connection import connect, fast_headers
from events.history import History
from events.response_stream import ensure_response_stream
from events.store import EventStore, ensure_stream
from events.subjects import MODEL_WORKERS, REQUESTS_FILTER, STREAM_NAME, WORKERS_ALIVE
from projections.active import ActiveViews
from projections.reader import ViewReader
from projections.worker import close_quietly
from workers.model_worker import ModelWorker
from workers.providers.registry import Registry

log = logging.getLogger("convstore.worker")


class Deliveries:
    """Up to `concurrency` deliveries handled at once, each in a task of its own.

    FastStream's concurrent subscriber (`max_workers`) hands each message through an anyio
    memory stream and two semaphore waits before the handler: ~0.2 ms more per delivery
    than its plain pull subscriber on this machine (stored -> handler p50 0.88-1.03 ms
    against 0.69-0.82), on the way to every response's first delta. The plain subscriber
    fetches the next request once its handler returns, so waiting here for a free slot is
    what holds the fetching back when all are busy."""

    def __init__(self, worker: ModelWorker, concurrency: int) -> None:
        self.worker = worker
        self.slots = asyncio.Semaphore(concurrency)
        self.tasks: set[asyncio.Task[None]] = set()

    async def take(self, msg: Msg) -> None:
        await self.slots.acquire()
        task = asyncio.create_task(self._handle(msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        try:
            await self.worker.handle(msg)
        except Exception:
            # NATS away or a bug: the delivery is not acked and comes back after ACK_WAIT.
            log.exception("response request at seq %s", msg.metadata.sequence.stream)
        finally:
            self.slots.release()

    async def stop(self) -> None:
        """Cancel the responses still running (as FastStream's own stop did): their
        deliveries are not acked, and another worker takes them after ack_wait."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def register_worker(broker: NatsBroker, worker: ModelWorker, concurrency: int) -> Deliveries:
    deliveries = Deliveries(worker, concurrency)
    subscriber = broker.subscriber(
        REQUESTS_FILTER,
        stream=JStream(name=STREAM_NAME, declare=False),
        durable=MODEL_WORKERS,
        pull_sub=PullSub(batch_size=1, timeout=5.0),
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=worker.ack_wait,
            max_ack_pending=10_000,
        ),
        ack_policy=AckPolicy.MANUAL,
    )

    @subscriber
    async def on_request(_: bytes) -> None:
        # The broker runs without fast_depends (apply_types=False: it cost ~1 ms of CPU
        # per delivery, on the way to every response's first delta); the message is in
        # FastStream's context instead of an injected argument.
        msg: NatsMessage = broker.context.get_local("message")
        await deliveries.take(msg.raw_message)

    return deliveries


async def run_model_worker(
    nats_urls: list[str],
    stop: asyncio.Event,
    *,
    replicas: int = 1,
    registry: Registry | None = None,
    concurrency: int = 16,
    read_wait_timeout: float = 5.0,
    ack_wait: float = 30.0,
) -> None:
    nc = await connect(nats_urls, "convstore-worker")
    js = nc.jetstream()
    await ensure_stream(js, replicas=replicas)
    await ensure_response_stream(js, replicas=replicas)
    views = ActiveViews(js, replicas)
    await views.start()
    store = EventStore(nc, js)
    # With the log at hand, a conversation whose views trail it by a few events is folded
    # by the read itself instead of waited for (the projector may not have folded the
    # previous response's outcome when the next request arrives).
    reader = ViewReader(views, read_wait_timeout, History(store))
    worker = ModelWorker(nc, js, store, reader, registry or Registry({}), ack_wait=ack_wait)
    broker = NatsBroker(
        nats_urls,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        log_level=logging.DEBUG,
        apply_types=False,
    )
    deliveries = register_worker(broker, worker, concurrency)
    fast_headers(await broker.connect())
    await broker.start()

    since = datetime.now(UTC).isoformat(timespec="seconds")

    async def answer(msg: Msg) -> None:
        about = {
            "name": worker.name,
            "running": worker.running,
            "concurrency": concurrency,
            "since": since,
        }
        await msg.respond(json.dumps(about).encode())

    # "Is a worker running?" (api/queue_timeout.py, which takes the first answer), and
    # "which ones?" (convstore status, which collects them all): answered while this one
    # takes requests.
    alive = await nc.subscribe(WORKERS_ALIVE, cb=answer)
    log.info("model worker %s taking responses (%d at a time)", worker.name, concurrency)
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await alive.unsubscribe()
        await close_quietly(broker.stop(), timeout=10.0)
        await close_quietly(deliveries.stop(), timeout=10.0)
        await views.stop()
        with contextlib.suppress(Exception):
            await close_quietly(nc.drain())
        await close_quietly(nc.close())
