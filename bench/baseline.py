"""The raw JetStream baseline, measured on the same nats-server as the workload.

Every target with a ratio compares convstore with what JetStream itself does on the same
server, durability setting and machine, in the same run:
- publish: `js.publish` of the bytes of a stored ItemAdded to a stream of our own
  (BENCH_RAW, subjects bench.>, file storage), one at a time and 64 in flight;
- read: an ordered consumer (and, as an extra, a pull consumer fetching 256 at a time,
  the way `fold_log` reads) over the CONVSTORE stream from sequence 1.
"""

import asyncio
import contextlib
import time
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig
from nats.js.errors import NotFoundError

from bench import load
from bench.payload import raw_event_bytes
from bench.stats import summary
from events.subjects import ALL_EVENTS, STREAM_NAME

RAW_STREAM = "BENCH_RAW"
RAW_SUBJECT = "bench.raw"


async def connect(url: str) -> tuple[NATS, JetStreamContext]:
    nc = await nats.connect(url, name="bench-baseline")
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
