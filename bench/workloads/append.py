"""Append: POST one item to a conversation, one request at a time (latency), and with
64 requests in flight over 64 conversations (throughput).

One at a time shows the cost of one append (validate, read the head, publish with the
expected-sequence guard, PubAck); 64 in flight shows how far that scales on one server.
Each conversation has one writer, so there are no optimistic-concurrency retries.

Both are measured a second time against `GET /healthz`, which does no store work at all:
the HTTP floor. Whatever the store does, an append cannot beat the floor plus one raw
publish, so the floor says which targets this HTTP stack can reach at all.
"""

import time
from typing import Any

import httpx

from bench import load, wrk
from bench.context import Context
from bench.http import add_items, create_conversation
from bench.payload import http_item
from bench.procs import CpuMeter
from bench.stats import summary
from bench.wire import auth_headers


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
    """The Python client, then wrk when installed (`bench/wrk.py`): the faster run counts,
    the other is kept under `other_client` (a client that costs the shared cores more CPU
    leaves the server less)."""
    n = ctx.sizes.in_flight
    async with load.http_client(ctx.base_url) as client:
        conversations = [await create_conversation(client) for _ in range(n)]
    params = {"base_url": ctx.base_url, "conversations": conversations, "item": http_item()}
    with CpuMeter(ctx.pids()) as cpu:
        figures = await load.measure("http_append", params, ctx.sizes.seconds, ctx.procs)
    latencies = figures.pop("latencies")
    python = {
        **figures,
        "client": "python",
        "in_flight": n,
        "latency": summary(latencies),
        "cpu": cpu.rounded(),
    }
    if not wrk.available():
        return python
    await ctx.settle()
    with CpuMeter(ctx.pids()) as cpu:
        native = await wrk.append_in_flight(
            ctx.base_url, conversations, http_item(), ctx.sizes.seconds
        )
    native = {
        **native,
        "in_flight": n,
        "cpu": {**cpu.rounded(), "client": native["client_cpu_max"]},
    }
    best, other = (
        (native, python) if native["per_second"] > python["per_second"] else (python, native)
    )
    return {**best, "other_client": other}


async def http_floor(ctx: Context) -> dict[str, Any]:
    """`GET /healthz` one at a time and with as many in flight as the append: the cost of
    uvicorn, the ASGI middleware and the client, with no NATS request at all."""
    url = ctx.base_url.removesuffix("/").removesuffix("/v1") + "/healthz"
    latencies: list[float] = []
    async with load.http_client(url) as client:
        for n in range(ctx.sizes.warmup + ctx.sizes.sequential):
            start = time.perf_counter()
            (await client.get(url)).raise_for_status()
            if n >= ctx.sizes.warmup:
                latencies.append(time.perf_counter() - start)
    through_httpx = await _through_httpx(url, ctx.sizes.warmup + ctx.sizes.sequential)
    params = {"url": url, "workers": ctx.sizes.in_flight}
    with CpuMeter(ctx.pids()) as cpu:
        figures = await load.measure("http_get", params, ctx.sizes.seconds, ctx.procs)
    many = figures.pop("latencies")
    concurrent = {**figures, "client": "python", "latency": summary(many), "cpu": cpu.rounded()}
    if wrk.available():  # the floor with the client the append may be judged with
        native = await wrk.in_flight(
            url, ["/healthz"] * ctx.sizes.in_flight, None, ctx.sizes.seconds
        )
        if native["per_second"] > concurrent["per_second"]:
            concurrent = {**native, "other_client": concurrent}
    return {
        "path": "/healthz",
        "one_at_a_time": {"latency": summary(latencies)},
        "one_at_a_time_httpx": {"latency": summary(through_httpx[ctx.sizes.warmup :])},
        "in_flight": concurrent,
    }


async def _through_httpx(url: str, count: int) -> list[float]:
    """The same floor through httpx (what the openai SDK and runs 1-8 of this benchmark
    used): kept beside the figures to show what a heavier client adds to every one."""
    latencies: list[float] = []
    async with httpx.AsyncClient(timeout=30.0, headers=auth_headers()) as client:
        for _ in range(count):
            start = time.perf_counter()
            (await client.get(url)).raise_for_status()
            latencies.append(time.perf_counter() - start)
    return latencies


async def run(ctx: Context) -> dict[str, Any]:
    if ctx.server is None:  # --target: another server need not have /healthz
        floor = None
    else:
        floor = await http_floor(ctx)
    sequential = await one_at_a_time(ctx)
    lag = await ctx.settle()
    concurrent = await in_flight(ctx)
    # The backlog the projector still had to fold when the 64-in-flight window closed.
    concurrent["projector_catch_up_s"] = _round(await ctx.settle())
    sequential["projector_catch_up_s"] = _round(lag)
    figures = {"one_at_a_time": sequential, "in_flight": concurrent}
    return figures if floor is None else {**figures, "http_floor": floor}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
