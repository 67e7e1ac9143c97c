"""workers/runner.py: a worker process runs at most `concurrency` responses at once, takes
the next request as a slot frees, and cancels what still runs when it stops."""

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
from events.subjects import WORKERS_ALIVE
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


async def test_a_worker_runs_at_most_its_concurrency_then_the_rest(fresh_nats):
    async with worker_process(fresh_nats, concurrency=2) as run:
        nc, provider = run.store.nc, run.provider

        async def alive() -> bool:
            try:
                return await running(nc) == 0
            except Exception:
                return False

        await until(alive)
        rids = [await request(run.store) for _ in range(3)]

        async def two_running() -> bool:
            return provider.started == 2 and await running(nc) == 2

        await until(two_running)
        await asyncio.sleep(0.3)
        assert provider.started == 2  # the third waits for a slot
        provider.gate.set()

        async def all_done() -> bool:
            heads = [await run.store.head(rid) for rid in rids]
            return all(h is not None and h.event_type == "ResponseCompleted" for h in heads)

        await until(all_done)
        assert provider.started == 3 and provider.cancelled == 0


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
