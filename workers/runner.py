"""Runs model workers on the shared durable consumer (`workers/deliveries.py`).

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

from events.connection import cancel_for_sure, connect
from events.history import History
from events.response_stream import ensure_response_stream
from events.store import EventStore, ensure_stream
from events.subjects import WORKERS_ALIVE
from projections.active import ActiveViews
from projections.reader import ViewReader
from projections.worker import close_quietly
from workers.deliveries import Deliveries
from workers.model_worker import ModelWorker
from workers.providers.registry import Registry

log = logging.getLogger("convstore.worker")


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
    pulling = asyncio.create_task(deliveries.pull(nc, js, worker.ack_wait))

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
