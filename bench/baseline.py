"""The raw JetStream baseline, measured on the same nats-server as the workload.

Every target with a ratio compares convstore with what JetStream itself does on the same
server, durability setting and machine, in the same run:
- publish: `js.publish` of the bytes of a stored ItemAdded to a stream of our own
  (BENCH_RAW, subjects bench.>, file storage), one at a time and 64 in flight;
- responses: the least NATS work of a streamed response (RawResponses below);
- read: an ordered consumer (and, as an extra, a pull consumer fetching 256 at a time,
  how `fold_log` read until it used an ordered consumer) over the CONVSTORE stream from
  sequence 1.
"""

import asyncio
import contextlib
import time
from typing import Any

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from bench import load, payload
from bench.payload import raw_event_bytes
from bench.stats import summary
from events.subjects import ALL_EVENTS, STREAM_NAME

RAW_STREAM = "BENCH_RAW"
RAW_SUBJECT = "bench.raw"


async def connect(url: str) -> tuple[NATS, JetStreamContext]:
    nc = await load.stock_connect(url, "bench-baseline")
    return nc, nc.jetstream(timeout=30)


async def ensure_raw_stream(js: JetStreamContext) -> None:
    with contextlib.suppress(NotFoundError):
        await js.delete_stream(RAW_STREAM)
    await js.add_stream(
        StreamConfig(name=RAW_STREAM, subjects=["bench.>"], storage=StorageType.FILE)
    )


async def sequential_publish(js: JetStreamContext, n: int, warmup: int) -> list[float]:
    """Latency of one js.publish at a time (publish to PubAck)."""
    payload = raw_event_bytes()
    latencies: list[float] = []
    for i in range(warmup + n):
        start = time.perf_counter()
        await js.publish(f"{RAW_SUBJECT}.seq", payload, stream=RAW_STREAM)
        if i >= warmup:
            latencies.append(time.perf_counter() - start)
    return latencies


async def publish_baseline(
    nats_url: str, n: int, warmup: int, in_flight: int, seconds: float, procs: int | None
) -> dict[str, Any]:
    """Raw publish figures: one at a time, then `in_flight` concurrent publishers."""
    nc, js = await connect(nats_url)
    try:
        await ensure_raw_stream(js)
        sequential = await sequential_publish(js, n, warmup)
        params = {
            "nats_url": nats_url,
            "payload": raw_event_bytes(),
            "subject": f"{RAW_SUBJECT}.par",
            "stream": RAW_STREAM,
            "workers": in_flight,
        }
        concurrent = await load.measure("raw_publish", params, seconds, procs)
        await js.delete_stream(RAW_STREAM)
    finally:
        await nc.drain()
    latencies = concurrent.pop("latencies")
    return {
        "payload_bytes": len(raw_event_bytes()),
        "publish_sequential": summary(sequential),
        "publish_concurrent": {**concurrent, "in_flight": in_flight, **_latency(latencies)},
    }


def _latency(latencies: list[float]) -> dict[str, Any]:
    return {"latency": summary(latencies)}


async def ordered_read_rate(nats_url: str, end: int) -> dict[str, Any]:
    """Read CONVSTORE from sequence 1 to `end` with an ordered (push) consumer."""
    nc, js = await connect(nats_url)
    done = asyncio.Event()
    count = 0

    async def on_message(msg: Any) -> None:
        nonlocal count
        count += 1
        if msg.metadata.sequence.stream >= end:
            done.set()

    try:
        start = time.perf_counter()
        sub = await js.subscribe(
            ALL_EVENTS, stream=STREAM_NAME, cb=on_message, ordered_consumer=True
        )
        await asyncio.wait_for(done.wait(), timeout=max(60.0, end / 2000))
        seconds = time.perf_counter() - start
        await sub.unsubscribe()
    finally:
        await nc.drain()
    return {"events": count, "seconds": round(seconds, 3), "per_second": round(count / seconds, 1)}


async def pull_read_rate(nats_url: str, end: int, batch: int = 256) -> dict[str, Any]:
    """Read CONVSTORE from sequence 1 to `end` with a pull consumer, `batch` per fetch."""
    nc, js = await connect(nats_url)
    count = 0
    try:
        start = time.perf_counter()
        sub = await js.pull_subscribe(
            ALL_EVENTS,
            stream=STREAM_NAME,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, inactive_threshold=60),
        )
        seq = 0
        while seq < end:
            messages = await sub.fetch(batch, timeout=30)
            count += len(messages)
            seq = messages[-1].metadata.sequence.stream
        seconds = time.perf_counter() - start
        await sub.unsubscribe()
    finally:
        await nc.drain()
    return {"events": count, "seconds": round(seconds, 3), "per_second": round(count / seconds, 1)}


RESPONSE_STREAM = "BENCH_RESP"


class RawResponses:
    """The least NATS work a store-backed streamed response must do, in raw nats-py, with
    an "API" and a "worker" connection in one process (as `convstore serve` runs them):

    1. the API appends the request to a file-backed stream and waits for its PubAck;
    2. the worker gets it from that stream (a push consumer) and publishes the deltas on
       core NATS, one message each, to a subject the API has subscribed to;
    3. the worker appends the outcome (PubAck awaited) and tells the API on core NATS.

    Time to the first delta is steps 1-2 for one delta; completion is all of it. There is
    no HTTP, no projection, no claim and no read of any state: whatever convstore takes
    beyond this is what its design and Python add.
    """

    def __init__(self, nats_url: str, deltas: int) -> None:
        self.nats_url = nats_url
        self.delta_bytes = [
            payload.response_delta_bytes(word, n + 4)
            for n, word in enumerate(payload.echo_words()[:deltas])
        ]
        self.request = payload.response_request_bytes()
        self.outcome = payload.response_outcome_bytes()
        self.waiting: dict[str, tuple[asyncio.Event, asyncio.Event]] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.counter = 0

    async def __aenter__(self) -> "RawResponses":
        self.api = await load.stock_connect(self.nats_url, "bench-raw-api")
        self.worker = await load.stock_connect(self.nats_url, "bench-raw-worker")
        self.api_js = self.api.jetstream(timeout=30)
        self.worker_js = self.worker.jetstream(timeout=30)
        with contextlib.suppress(NotFoundError):
            await self.api_js.delete_stream(RESPONSE_STREAM)
        await self.api_js.add_stream(
            StreamConfig(
                name=RESPONSE_STREAM,
                subjects=["benchresp.req.*", "benchresp.out.*"],
                storage=StorageType.FILE,
            )
        )
        await self.api.subscribe("benchresp.delta.*", cb=self._on_delta)
        await self.api.subscribe("benchresp.done.*", cb=self._on_done)
        await self.api.flush()
        await self.worker_js.subscribe(
            "benchresp.req.*", stream=RESPONSE_STREAM, cb=self._on_request, ordered_consumer=True
        )
        return self

    async def __aexit__(self, *_: object) -> None:
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self.api_js.delete_stream(RESPONSE_STREAM)
        await self.worker.drain()
        await self.api.drain()

    async def _on_request(self, msg: Any) -> None:
        # One task per response, as the worker runs up to 16 at a time.
        task = asyncio.create_task(self._respond(msg.subject.rpartition(".")[2]))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _respond(self, rid: str) -> None:
        for data in self.delta_bytes:
            await self.worker.publish(f"benchresp.delta.{rid}", data)
        await self.worker_js.publish(f"benchresp.out.{rid}", self.outcome, stream=RESPONSE_STREAM)
        await self.worker.publish(f"benchresp.done.{rid}", b"")

    async def _on_delta(self, msg: Any) -> None:
        waiting = self.waiting.get(msg.subject.rpartition(".")[2])
        if waiting:
            waiting[0].set()

    async def _on_done(self, msg: Any) -> None:
        waiting = self.waiting.get(msg.subject.rpartition(".")[2])
        if waiting:
            waiting[1].set()

    async def one(self) -> tuple[float, float]:
        """(seconds to the first delta, seconds to completion) of one response."""
        self.counter += 1
        rid = str(self.counter)
        first, done = self.waiting[rid] = (asyncio.Event(), asyncio.Event())
        try:
            start = time.perf_counter()
            await self.api_js.publish(f"benchresp.req.{rid}", self.request, stream=RESPONSE_STREAM)
            await asyncio.wait_for(first.wait(), 30)
            first_delta = time.perf_counter() - start
            await asyncio.wait_for(done.wait(), 30)
            return first_delta, time.perf_counter() - start
        finally:
            del self.waiting[rid]


async def responses_baseline(
    nats_url: str, n: int, warmup: int, deltas: int, in_flight: int, seconds: float
) -> dict[str, Any]:
    """The raw response flow one at a time (first delta and completion), then `in_flight`
    at once for `seconds` (flows/s). One process: the flow is two connections' work, and
    the API and worker it stands for share one process in `convstore serve` too."""
    async with RawResponses(nats_url, deltas) as raw:
        firsts: list[float] = []
        completions: list[float] = []
        for i in range(warmup + n):
            first, completed = await raw.one()
            if i >= warmup:
                firsts.append(first)
                completions.append(completed)

        async def op(_: int) -> None:
            await raw.one()

        concurrent = await load.closed_loop(op, in_flight, seconds)
    return {
        "deltas": len(raw.delta_bytes),
        "request_bytes": len(raw.request),
        "first_delta": summary(firsts),
        "completed": summary(completions),
        "in_flight": {
            "in_flight": in_flight,
            "requests": concurrent.count,
            "errors": concurrent.errors,
            "first_error": concurrent.first_error,
            "per_second": round(concurrent.count / concurrent.wall, 1),
            "client_cpu": round(concurrent.cpu_share, 2),
            "completed": summary(concurrent.latencies),
        },
    }
