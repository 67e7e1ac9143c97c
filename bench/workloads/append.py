"""Append: POST one item to a conversation, one request at a time (latency), and with
64 requests in flight over 64 conversations (throughput).

One at a time shows the cost of one append (validate, read the head, publish with the
expected-sequence guard, PubAck); 64 in flight shows how far that scales on one server.
Each conversation has one writer, so there are no optimistic-concurrency retries.
"""

import time
from typing import Any

from bench import load
from bench.context import Context
from bench.http import add_items, create_conversation
from bench.payload import http_item
from bench.procs import CpuMeter
from bench.stats import summary


async def one_at_a_time(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    async with load.http_client(ctx.base_url) as client:
        conversation = await create_conversation(client)
        for _ in range(sizes.warmup):
            await add_items(client, conversation)
        latencies: list[float] = []
        with CpuMeter(ctx.pids()) as cpu:
            for _ in range(sizes.sequential):
                start = time.perf_counter()
                await add_items(client, conversation)
                latencies.append(time.perf_counter() - start)
    return {"latency": summary(latencies), "cpu": cpu.rounded()}


async def in_flight(ctx: Context) -> dict[str, Any]:
    n = ctx.sizes.in_flight
    async with load.http_client(ctx.base_url) as client:
        conversations = [await create_conversation(client) for _ in range(n)]
    params = {"base_url": ctx.base_url, "conversations": conversations, "item": http_item()}
    with CpuMeter(ctx.pids()) as cpu:
        figures = await load.measure("http_append", params, ctx.sizes.seconds, ctx.procs)
    latencies = figures.pop("latencies")
    return {**figures, "in_flight": n, "latency": summary(latencies), "cpu": cpu.rounded()}


async def run(ctx: Context) -> dict[str, Any]:
    sequential = await one_at_a_time(ctx)
    lag = await ctx.settle()
    concurrent = await in_flight(ctx)
    # The backlog the projector still had to fold when the 64-in-flight window closed.
    concurrent["projector_catch_up_s"] = _round(await ctx.settle())
    sequential["projector_catch_up_s"] = _round(lag)
    return {"one_at_a_time": sequential, "in_flight": concurrent}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
