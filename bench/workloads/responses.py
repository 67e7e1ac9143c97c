"""Responses: a streamed `POST /responses` (`stream: true`) answered by the built-in echo
test provider, timed from sending the request to the first `response.output_text.delta`
frame and to `response.completed`.

Echo answers at once (no model time), so on the benchmark's own server the time to the
first delta is the store's overhead around a model call: accept and append the request,
hand it to a model worker, claim it, read its context, and relay the first delta back
through NATS and SSE. The raw flow (baseline.RawResponses: append the request, deliver it
to a worker, one delta back on core NATS) is the least NATS work of the same thing,
measured on the same server in the same run.

Series, one request at a time (p50/p99 after warmup):
- `conversation` (the main case, judged by the target): `conversation: <id>`. Each
  conversation takes TURNS responses, then the next one is used (created beforehand), so
  the context the worker reads (every item of the conversation) stays small and the same
  whatever the number of requests;
- `no_conversation`: a response of its own (a thread with just the request);
- `chain`: `previous_response_id` on a chain CHAIN_DEPTH turns deep (and deeper with each
  measured request), whose earlier turns the worker gathers for the context.
Then `in_flight`: 16 at a time (the model worker's default concurrency), each on its own
conversation, for the window: responses/s and latencies under load.

With --target the same requests go to another server; its model's time is then part of
every figure, so the store-overhead target is not judged there.
"""

import statistics
import time
from collections.abc import Awaitable
from typing import Any

from bench import baseline, load, milestones
from bench.context import Context
from bench.http import HttpFailure, Streamed, create_conversation, stream_response
from bench.payload import echo_words, response_input
from bench.procs import CpuMeter
from bench.stats import summary

TURNS = 10  # responses per conversation: its context grows to 2 * (TURNS - 1) items
CHAIN_DEPTH = 200  # turns of the previous_response_id chain before its series is measured
CHAIN_MEASURED = 200  # at most this many responses extend it, measured


async def _conversations(ctx: Context, count: int) -> list[str]:
    async with load.http_client(ctx.base_url) as client:
        return [await create_conversation(client) for _ in range(count)]


async def one_at_a_time(ctx: Context, on_conversation: bool) -> dict[str, Any]:
    """`warmup` + `responses` streamed responses, one after the other."""
    sizes = ctx.sizes
    total = sizes.warmup + sizes.responses
    conversations = await _conversations(ctx, -(-total // TURNS)) if on_conversation else []
    body = {"model": ctx.model, "input": response_input()}
    samples: list[Streamed] = []
    async with load.http_client(ctx.base_url) as client:
        first = await stream_response(client, {**body, **_on(conversations, 0)}, text=True)
        if ctx.server is not None and not first.text.startswith("echo: "):
            raise HttpFailure(f"serve did not answer with the echo provider: {first.text!r}")
        for n in range(1, sizes.warmup):
            await stream_response(client, {**body, **_on(conversations, n)})
        since = await milestones.last_seqs(ctx.server.nats_url) if ctx.server else None
        start = time.perf_counter()
        with CpuMeter(ctx.pids()) as cpu:
            for n in range(sizes.warmup, total):
                samples.append(await stream_response(client, {**body, **_on(conversations, n)}))
        wall = time.perf_counter() - start
    no_delta = sum(1 for s in samples if s.first_delta is None)
    traced = None
    if ctx.server is not None and since is not None:
        traced = await milestones.measure(ctx.server.nats_url, since, samples)
    return {
        "requests": len(samples),
        "turns_per_conversation": TURNS if on_conversation else None,
        "accepted": summary([s.accepted for s in samples]),
        "first_event": summary([s.first_event for s in samples]),
        "first_delta": summary([s.first_delta for s in samples if s.first_delta is not None]),
        "completed": summary([s.completed for s in samples]),
        "responses_without_text_delta": no_delta,
        "deltas_median": statistics.median(s.deltas for s in samples) if samples else None,
        "events_median": statistics.median(s.events for s in samples) if samples else None,
        # Where the time went, from the servers' stored timestamps (bench/milestones.py).
        "segments": traced,
        "cpu": cpu.rounded(),
        # CPU per response, by process (serve and api2, ... are the API processes).
        "cpu_ms_per_response": {
            name: round(share * wall / max(len(samples), 1) * 1000, 2)
            for name, share in cpu.shares.items()
        },
    }


async def on_chain(ctx: Context) -> dict[str, Any]:
    """Responses continuing one `previous_response_id` chain already CHAIN_DEPTH turns
    deep (fewer with --quick), one at a time: each request's context is every earlier
    turn, which the worker must gather. Measured: up to CHAIN_MEASURED requests, each
    extending the chain."""
    measured = min(ctx.sizes.responses, CHAIN_MEASURED)
    depth = min(ctx.sizes.responses, CHAIN_DEPTH)  # --quick: a shallow chain, a quick run
    body = {"model": ctx.model, "input": response_input()}
    samples: list[Streamed] = []
    previous: str | None = None
    async with load.http_client(ctx.base_url) as client:
        for n in range(depth + measured):
            step = await stream_response(client, {**body, "previous_response_id": previous})
            if step.response_id is None:
                raise HttpFailure("a streamed response named no response id")
            previous = step.response_id
            if n >= depth:
                samples.append(step)
    return {
        "requests": len(samples),
        "depth": [depth, depth + measured - 1],
        "first_delta": summary([s.first_delta for s in samples if s.first_delta is not None]),
        "completed": summary([s.completed for s in samples]),
    }


def _on(conversations: list[str], n: int) -> dict[str, Any]:
    """The request's `conversation`, TURNS requests each (nothing without conversations)."""
    return {"conversation": conversations[n // TURNS]} if conversations else {}


async def in_flight(ctx: Context) -> dict[str, Any]:
    n = ctx.sizes.responses_in_flight
    params = {
        "base_url": ctx.base_url,
        "model": ctx.model,
        "input": response_input(),
        "workers": n,
        "conversation": True,
        "turns": TURNS,
    }
    with CpuMeter(ctx.pids()) as cpu:
        figures = await load.measure("http_responses", params, ctx.sizes.seconds, ctx.procs)
    completed = figures.pop("latencies")
    first_deltas = figures.pop("first_deltas", [])
    return {
        **figures,
        "in_flight": n,
        "first_delta": summary(first_deltas),
        "completed": summary(completed),
        "cpu": cpu.rounded(),
    }


async def _guarded(ctx: Context, work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """With --target, a series the other server refuses (e.g. it has no Conversations
    API) is recorded with its error and the others still run; on our own server any
    failure fails the workload."""
    try:
        return await work
    except Exception as exc:
        if ctx.server is not None:
            raise
        return {"error": f"{type(exc).__name__}: {exc}"}


async def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    result: dict[str, Any] = {"model": ctx.model, "input_chars": len(response_input())}
    if ctx.server is not None:
        # First, on the idle server: the least NATS work of the same flow.
        result["raw_flow"] = await baseline.responses_baseline(
            ctx.server.nats_url,
            sizes.responses,
            sizes.warmup,
            len(echo_words()),
            sizes.responses_in_flight,
            sizes.seconds,
        )
    result["conversation"] = await _guarded(ctx, one_at_a_time(ctx, True))
    await ctx.settle()
    result["no_conversation"] = await _guarded(ctx, one_at_a_time(ctx, False))
    await ctx.settle()
    result["chain"] = await _guarded(ctx, on_chain(ctx))
    await ctx.settle()
    result["in_flight"] = await _guarded(ctx, in_flight(ctx))
    await ctx.settle()
    first = result["conversation"].get("first_delta") or {}
    # Echo takes ~0 ms: on our own server the time to the first delta is the overhead.
    result["store_overhead_p50_ms"] = first.get("p50_ms") if ctx.server is not None else None
    return result
