"""Runs model workers: a pull loop on the shared durable consumer, in plain nats-py.

Any number of processes share the consumer `model_workers`; each handles up to
`concurrency` responses at a time and asks for as many requests as it has free slots.
A delivery is kept alive while its response runs and acked only when the outcome is in
the log (or there is nothing to do).
"""

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext

from events.connection import cancel_for_sure, connect
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

FETCH_WAIT = 5.0  # seconds a pull request waits for requests before it is made again


class Deliveries:
    """Up to `concurrency` deliveries handled at once, each in a task of its own, fed by
    one pull loop that asks for as many requests as there are free slots, and for none
    while all are busy.

    Not FastStream's pull subscriber: it fetches a fixed batch per round trip. With a
    batch of one, a worker streaming 16 responses took one request per ~8 ms (each
    fetch waits its turn several times on a loop busy with the others' deltas): requests
    waited 100-200 ms in the log (claim p50 215 ms, 55-110 responses/s, at 16 in flight
    with 11-14 slots free). A larger fixed batch would take requests it has no slot for:
    away from idle workers, and not kept alive while they wait, so after ack_wait
    another worker would take over a request this one then also starts."""

    def __init__(self, worker: ModelWorker, concurrency: int) -> None:
        self.worker = worker
        self.free = concurrency
        self.has_free = asyncio.Event()
        self.has_free.set()
        self.tasks: set[asyncio.Task[None]] = set()

    async def pull(self, js: JetStreamContext, ack_wait: float) -> None:
        """Fetch and start requests until cancelled; NATS errors are waited out."""
        sub: JetStreamContext.PullSubscription | None = None
        while True:
            try:
                if sub is None:
                    sub = await js.pull_subscribe(
                        REQUESTS_FILTER,
                        durable=MODEL_WORKERS,
                        stream=STREAM_NAME,
                        config=consumer_config(ack_wait),
                    )
                await self.has_free.wait()
                msgs = await sub.fetch(self.free, timeout=FETCH_WAIT)
            except TimeoutError:
                continue
            except Exception as exc:  # NATS away, the consumer gone: subscribe again
                if isinstance(exc, NatsError):
                    log.debug("fetching response requests: %r", exc)
                else:
                    log.exception("fetching response requests")
                if sub is not None:
                    with contextlib.suppress(Exception):
                        await sub.unsubscribe()
                sub = None
                await asyncio.sleep(0.5)
                continue
            for msg in msgs:
                await self._start(msg)

    async def _start(self, msg: Msg) -> None:
        if self.free <= 0:
            # nats-py hands over what an earlier request left in its queue as well: give
            # it back at once for any worker with a slot.
            with contextlib.suppress(Exception):
                await msg.nak()
            return
        self.free -= 1
        if self.free == 0:
            self.has_free.clear()
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
            self.free += 1
            self.has_free.set()

    async def stop(self) -> None:
        """Cancel the responses still running: their deliveries are not acked, and
        another worker takes them after ack_wait."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def consumer_config(ack_wait: float) -> ConsumerConfig:
    """The shared durable's settings (as FastStream made it before: same name, same
    filter, so a running deployment keeps its consumer and its acks)."""
    return ConsumerConfig(
        durable_name=MODEL_WORKERS,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=10_000,
        filter_subject=REQUESTS_FILTER,
    )


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
    deliveries = Deliveries(worker, concurrency)
    pulling = asyncio.create_task(deliveries.pull(js, worker.ack_wait))

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
        await cancel_for_sure(pulling)
        await close_quietly(deliveries.stop(), timeout=10.0)
        await views.stop()
        with contextlib.suppress(Exception):
            await close_quietly(nc.drain())
        await close_quietly(nc.close())
