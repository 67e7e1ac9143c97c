"""workers/runner.py: a worker process runs at most `concurrency` responses at once, asks
for as many requests as it has free slots (none while all are busy, so another worker can
take them), takes the next as a slot frees, and cancels what still runs when it stops."""

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from events.connection import connect
from events.ids import new_response_id
from events.response_stream import ensure_response_stream
from events.schema import ResponseRequested
from events.store import EventStore, ensure_stream
from events.subjects import MODEL_WORKERS, STREAM_NAME, WORKERS_ALIVE
from tests.test_model_worker import OneProvider
from workers.providers.base import Chunk, Finish, ModelCall, TextDelta
from workers.runner import run_model_worker


class Gated:
    """Says one word, then waits at the gate (cancellable) before finishing."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.started = 0
        self.cancelled = 0

    async def stream(self, call: ModelCall) -> AsyncIterator[Chunk]:
        self.started += 1
        yield TextDelta("hello")
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        yield Finish("stop")


async def request(store: EventStore) -> str:
    rid = new_response_id(None)
    event = ResponseRequested(
        conversation_id=rid,
        response_id=rid,
        created_at=int(time.time()),
        model="m",
        input=[
            {
                "id": f"msg_{rid[5:]}",
                "type": "message",
                "role": "user",
                "status": "completed",
                "content": [{"type": "input_text", "text": "hi"}],
            }
        ],
    )
    await store.append([event], expected_last_seq=0)
    return rid


async def running(nc: NATS) -> int:
    """How many responses the (one) worker says it runs now."""
    answer = await nc.request(WORKERS_ALIVE, b"", timeout=2)
    return int(json.loads(answer.data)["running"])


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@dataclass
class Running:
    store: EventStore
    provider: Gated
    stop: asyncio.Event
    worker: "asyncio.Task[None]"


@contextlib.asynccontextmanager
async def worker_process(url: str, concurrency: int) -> AsyncIterator[Running]:
    """`run_model_worker` as `convstore worker` runs it, with a gated provider, and a
    connection of the test's own to append requests and ask the worker how busy it is."""
    nc = await connect([url], "test-runner")
    js = nc.jetstream()
    await ensure_stream(js)
    await ensure_response_stream(js)
    provider = Gated()
    stop = asyncio.Event()
    registry = OneProvider(provider)  # type: ignore[arg-type]
    worker = asyncio.create_task(
        run_model_worker([url], stop, registry=registry, concurrency=concurrency)
    )
    try:
        yield Running(EventStore(nc, js), provider, stop, worker)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 20)
        await nc.close()


async def until_idle(run: Running) -> None:
    """Until the worker answers that it runs nothing (it is up)."""

    async def idle() -> bool:
        try:
            return await running(run.store.nc) == 0
        except Exception:
            return False

    await until(idle)


async def until_running(run: Running, n: int) -> None:
    async def started() -> bool:
        return run.provider.started == n and await running(run.store.nc) == n

    await until(started)


async def until_completed(store: EventStore, rids: list[str]) -> None:
    async def done() -> bool:
        heads = [await store.head(rid) for rid in rids]
        return all(h is not None and h.event_type == "ResponseCompleted" for h in heads)

    await until(done)


async def three_for_two(run: Running) -> list[str]:
    """Three requests to a worker of two slots, once two run (and a moment passed)."""
    await until_idle(run)
    rids = [await request(run.store) for _ in range(3)]
    await until_running(run, 2)
    await asyncio.sleep(0.3)
    return rids


async def test_a_worker_runs_at_most_its_concurrency_then_the_rest(fresh_nats):
    async with worker_process(fresh_nats, concurrency=2) as run:
        rids = await three_for_two(run)
        assert run.provider.started == 2  # the third waits for a slot
        run.provider.gate.set()
        await until_completed(run.store, rids)
        assert run.provider.started == 3 and run.provider.cancelled == 0


async def test_stopping_a_worker_cancels_the_responses_it_runs(fresh_nats):
    async with worker_process(fresh_nats, concurrency=4) as run:
        rids = [await request(run.store) for _ in range(2)]

        async def both_started() -> bool:
            return run.provider.started == 2

        await until(both_started)
        run.stop.set()
        await asyncio.wait_for(run.worker, 15)
        assert run.provider.cancelled == 2
        # Nothing was finished: the requests stay for the next worker (not acked).
        for rid in rids:
            head = await run.store.head(rid)
            assert head is not None and head.event_type == "ResponseInProgress"


async def test_one_pull_request_serves_several_requests(fresh_nats):
    """A worker asks for all its free slots at once, not one request per round trip: at
    16 in flight, fetching one at a time left requests 100-200 ms in the log."""
    async with worker_process(fresh_nats, concurrency=4) as run:
        asked: list[int] = []

        async def pulled(msg) -> None:  # type: ignore[no-untyped-def]
            asked.append(json.loads(msg.data or b"{}").get("batch", 0))

        nc = run.store.nc
        sub = await nc.subscribe(
            f"$JS.API.CONSUMER.MSG.NEXT.{STREAM_NAME}.{MODEL_WORKERS}", cb=pulled
        )
        await nc.flush()
        await until_idle(run)
        for _ in range(4):
            await request(run.store)
        await until_running(run, 4)
        assert 1 not in asked and all(batch <= 4 for batch in asked)
        await sub.unsubscribe()
        run.provider.gate.set()


async def test_with_two_workers_each_request_starts_at_once(fresh_nats):
    """Two workers on the consumer, requests arriving in bursts: each starts when it is
    handed over, not when that worker's pull request is served in full or expires
    (nats-py's fetch(n) could hold delivered requests for its whole 5 s)."""
    async with (
        worker_process(fresh_nats, concurrency=8) as one,
        worker_process(fresh_nats, concurrency=8) as two,
    ):
        await until_idle(one)
        await until_idle(two)
        expected = 0
        for burst in (3, 2, 4, 1, 3):
            await asyncio.gather(*(request(one.store) for _ in range(burst)))
            expected += burst
            start = time.monotonic()

            async def started(n: int = expected) -> bool:
                return one.provider.started + two.provider.started == n

            await until(started)
            assert time.monotonic() - start < 2.0, f"the burst of {burst} waited"
        one.provider.gate.set()
        two.provider.gate.set()


async def test_a_busy_worker_leaves_the_next_request_to_another_worker(fresh_nats):
    async with worker_process(fresh_nats, concurrency=2) as busy:
        rids = await three_for_two(busy)
        info = await busy.store.js.consumer_info(STREAM_NAME, MODEL_WORKERS)
        # The third was not fetched by the busy worker: it waits in the log, for anyone.
        assert (info.num_ack_pending, info.num_pending) == (2, 1)
        async with worker_process(fresh_nats, concurrency=2) as idle:

            async def taken() -> bool:
                return idle.provider.started == 1

            await until(taken)
            assert busy.provider.started == 2
            busy.provider.gate.set()
            idle.provider.gate.set()
            await until_completed(busy.store, rids)


async def test_a_delivery_beyond_the_free_slots_goes_back_at_once(store: EventStore):
    """nats-py may hand over more than was asked for (what an earlier pull left in its
    queue): the extra one is given back for any worker, not held or started."""
    from workers.deliveries import Deliveries, consumer_config

    rid = await request(store)
    config = consumer_config(30.0)
    sub = await store.js.pull_subscribe(
        config.filter_subject or "", durable=MODEL_WORKERS, stream=STREAM_NAME, config=config
    )
    (msg,) = await sub.fetch(1, timeout=5)
    deliveries = Deliveries(None, 1)  # type: ignore[arg-type]
    deliveries.free = 0
    await deliveries._start(msg)
    assert not deliveries.tasks
    (again,) = await sub.fetch(1, timeout=2)  # back at once, not after ack_wait
    assert again.metadata.num_delivered == 2 and rid in again.subject
    await again.ack()
