"""Memory: RSS of every convstore process serve runs (serve itself, an API process; the
further API processes api2, api3, ...; the projector; the model worker) and of its
nats-server, before and after creating N conversations over HTTP (64 in flight) and
letting the projector fold them all.

Conversations are the unit that could leak: the API keeps no per-conversation state,
and the projector's view cache is meant to be bounded (10,000 views). The figure is the
growth, not the absolute size, which depends on the Python build and the libraries.
"""

import asyncio
import time
from typing import Any

from bench import load
from bench.context import Context
from bench.procs import rss_bytes
from bench.stats import summary

MB = 1024 * 1024


async def run(ctx: Context) -> dict[str, Any]:
    assert ctx.server is not None, "memory needs the benchmark's own server"
    count = ctx.sizes.memory_conversations
    await ctx.settle()
    await asyncio.sleep(1.0)
    before = {name: rss_bytes(pid) for name, pid in ctx.pids().items()}
    body = {"metadata": {"bench": "memory"}}
    async with load.http_clients(ctx.base_url, ctx.sizes.in_flight) as clients:

        async def create(n: int) -> None:
            response = await clients[n].post("conversations", json=body)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

        start = time.perf_counter()
        created = await load.fixed_count(create, ctx.sizes.in_flight, count)
    caught_up = await ctx.settle(timeout=3600)
    total = time.perf_counter() - start
    await asyncio.sleep(1.0)
    after = {name: rss_bytes(pid) for name, pid in ctx.pids().items()}
    growth = {name: round((after[name] - before[name]) / MB, 1) for name in after}
    return {
        "conversations": created.count,
        "errors": created.errors,
        "first_error": created.first_error,
        "create_per_second": round(created.count / created.wall, 1),
        "create_latency": summary(created.latencies),
        "created_and_folded_per_second": round(created.count / total, 1) if total else None,
        "projector_trailing_s": round(caught_up or 0.0, 1),
        "rss_before_mb": {k: round(v / MB, 1) for k, v in before.items()},
        "rss_after_mb": {k: round(v / MB, 1) for k, v in after.items()},
        "rss_growth_mb": growth,
        # convstore's own processes: the API ones (serve, api2, ...), the projector and the
        # model worker.
        "serve_growth_per_100k_mb": round(
            convstore_growth(growth) * 100_000 / max(created.count, 1), 1
        ),
    }


def convstore_growth(growth: dict[str, float]) -> float:
    """RSS growth of every convstore process (not nats-server's)."""
    return round(sum(v for k, v in growth.items() if k != "nats-server"), 1)
