"""Closed-loop load: W workers, each sending its next request when the last one answered.

The driver must not be the bottleneck. Each run measures the client's own CPU; when one
Python process uses most of a core (SATURATED), the same load is spread over several
processes, whose windows open together once all of them are ready and last as
long, and their counts are added up.
"""

import asyncio
import contextlib
import multiprocessing
import queue
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import nats
from nats.aio.client import Client as NATS

from bench.http import create_conversation, stream_response
from bench.wire import HttpConnection
from convstore.loop import run_loop

SATURATED = 0.8  # client CPU seconds per wall second above which the client is suspect
START_TIMEOUT = 60.0  # seconds for a load process to spawn, import and connect
SAMPLES = ("latencies", "first_deltas")  # raw samples: summarised by the caller, not kept


@dataclass
class Run:
    """What one load process did in its window."""

    count: int = 0
    errors: int = 0
    wall: float = 0.0
    cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_error: str | None = None
    first_deltas: list[float] = field(default_factory=list)  # streamed responses only
    started: float = 0.0  # when its window opened (time.time())

    @property
    def cpu_share(self) -> float:
        return self.cpu / self.wall if self.wall else 0.0


Op = Callable[[int], Awaitable[float | None]]


async def closed_loop(op: Op, workers: int, seconds: float) -> Run:
    """Run `op(worker)` back to back in `workers` tasks for `seconds`.

    An op that returns a number has timed itself (leaving out its own setup, e.g. a new
    conversation now and then): that is its latency. In a load process of
    `in_processes`, it starts once every process of the load is ready (spawned, imported,
    its NATS connection or HTTP clients made: an HTTP connection opens on its first
    request), so that they load the server over the same window.
    """
    if _gate is not None:
        await asyncio.to_thread(_gate.ready_then_wait)
    run = Run(started=time.time())
    cpu0, t0 = time.process_time(), time.perf_counter()
    deadline = t0 + seconds

    async def worker(n: int) -> None:
        while time.perf_counter() < deadline:
            if not await _timed(run, op, n):
                await asyncio.sleep(0.01)

    await asyncio.gather(*(worker(n) for n in range(workers)))
    run.wall = time.perf_counter() - t0
    run.cpu = time.process_time() - cpu0
    return run


async def _timed(run: Run, op: Op, n: int) -> bool:
    """One timed call of `op`: its latency, or the error, counted in `run`."""
    start = time.perf_counter()
    try:
        own = await op(n)
    except Exception as exc:
        run.errors += 1
        run.first_error = run.first_error or f"{type(exc).__name__}: {exc}"
        return False
    run.latencies.append(time.perf_counter() - start if own is None else own)
    run.count += 1
    return True


def http_client(base_url: str) -> HttpConnection:
    """One HTTP/1.1 keep-alive connection, for one request at a time (`bench/wire.py`: the
    client must add as little as it can to the figures). Concurrent loads give every
    worker a connection of its own."""
    return HttpConnection(base_url, timeout=30.0)


@contextlib.asynccontextmanager
async def http_clients(base_url: str, count: int) -> AsyncIterator[list[HttpConnection]]:
    """`count` independent one-connection clients (one per concurrent worker)."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(http_client(base_url)) for _ in range(count)]


async def http_append(params: dict[str, Any], seconds: float) -> Run:
    """POST one item at a time to each of `params['conversations']`, one worker each."""
    conversations: list[str] = params["conversations"]
    body = {"items": [params["item"]]}
    async with http_clients(params["base_url"], len(conversations)) as clients:

        async def op(n: int) -> None:
            path = f"conversations/{conversations[n]}/items"
            response = await clients[n].post(path, json=body)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

        return await closed_loop(op, len(conversations), seconds)


async def http_get(params: dict[str, Any], seconds: float) -> Run:
    """GET `params['url']` from `params['workers']` one-connection clients: the HTTP floor."""
    url: str = params["url"]
    async with http_clients(url, params["workers"]) as clients:

        async def op(n: int) -> None:
            response = await clients[n].get(url)
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")

        return await closed_loop(op, params["workers"], seconds)


CONNECT_WITHIN = 10.0  # seconds


async def stock_connect(url: str, name: str, within: float = CONNECT_WITHIN) -> NATS:
    """A nats-py connection as it comes (the baseline's, no convstore tuning), or an error
    within `within` seconds: on its own, nats-py retries a first connect to a server that
    is not there for ~2 minutes (60 attempts, 2 s apart)."""
    return await asyncio.wait_for(nats.connect(url, name=name), within)


async def raw_publish(params: dict[str, Any], seconds: float) -> Run:
    """js.publish the stored-event bytes from `params['workers']` tasks on one connection."""
    nc = await stock_connect(params["nats_url"], "bench-raw")
    js = nc.jetstream(timeout=30)
    payload: bytes = params["payload"]
    prefix: str = params["subject"]
    try:

        async def op(n: int) -> None:
            await js.publish(f"{prefix}.{n}", payload, stream=params["stream"])

        return await closed_loop(op, params["workers"], seconds)
    finally:
        await nc.drain()


async def http_responses(params: dict[str, Any], seconds: float) -> Run:
    """Streamed responses back to back, one worker per conversation; each conversation
    takes `params['turns']` responses, then the worker opens a new one (not timed), so the
    context the worker reads stays the same size however long the window."""
    body = {"model": params["model"], "input": params["input"]}
    workers: int = params["workers"]
    conversations: list[str | None] = [None] * workers
    turns = [0] * workers
    firsts: list[float] = []
    async with http_clients(params["base_url"], workers) as clients:

        async def op(n: int) -> float:
            extra: dict[str, Any] = {}
            if params["conversation"]:
                if conversations[n] is None or turns[n] >= params["turns"]:
                    conversations[n], turns[n] = await create_conversation(clients[n]), 0
                turns[n] += 1
                extra["conversation"] = conversations[n]
            streamed = await stream_response(clients[n], {**body, **extra})
            if streamed.first_delta is not None:
                firsts.append(streamed.first_delta)
            return streamed.completed

        run = await closed_loop(op, workers, seconds)
    run.first_deltas = firsts
    return run


KINDS: dict[str, Callable[[dict[str, Any], float], Awaitable[Run]]] = {
    "http_append": http_append,
    "http_get": http_get,
    "raw_publish": raw_publish,
    "http_responses": http_responses,
}


class _Gate:
    """Opens the windows of a load's processes together: each says it is ready (spawned,
    imported, set up) and waits for the word to go, given once all of them are."""

    def __init__(self, ready: Any, go: Any) -> None:
        self.ready, self.go = ready, go

    def ready_then_wait(self) -> None:
        self.ready.put(1)
        if not self.go.wait(START_TIMEOUT):
            raise TimeoutError("the other load processes did not get ready")


_gate: _Gate | None = None  # set in the load processes of in_processes


def _join_gate(ready: Any, go: Any) -> None:
    global _gate
    _gate = _Gate(ready, go)


def _child(kind: str, params: dict[str, Any], seconds: float) -> Run:
    return run_loop(KINDS[kind](params, seconds))


def split(params: dict[str, Any], procs: int, n: int) -> dict[str, Any]:
    """The share of process n: its slice of conversations, or of the workers."""
    part = dict(params)
    if "conversations" in params:
        part["conversations"] = params["conversations"][n::procs]
    if "workers" in params:
        total = params["workers"]
        part["workers"] = total // procs + (1 if n < total % procs else 0)
    return part


def in_processes(kind: str, params: dict[str, Any], procs: int, seconds: float) -> list[Run]:
    """Run the load in `procs` fresh processes over the same window, which opens once
    all of them are ready (spawning and importing take ~1 s each here)."""
    context = multiprocessing.get_context("spawn")
    ready, go = context.Queue(), context.Event()
    with ProcessPoolExecutor(
        procs, mp_context=context, initializer=_join_gate, initargs=(ready, go)
    ) as pool:
        futures = [
            pool.submit(_child, kind, split(params, procs, n), seconds) for n in range(procs)
        ]
        try:
            _wait_ready(ready, futures)
        finally:
            go.set()  # also when one failed: the others must not wait out their timeout
        return [f.result() for f in futures]


def _wait_ready(ready: Any, futures: list["Future[Run]"]) -> None:
    """Until every load process said it is ready; raises what a process that ended
    before that raised (it would never say so)."""
    deadline = time.monotonic() + START_TIMEOUT
    waiting = len(futures)
    while waiting:
        try:
            ready.get(timeout=0.05)
            waiting -= 1
            continue
        except queue.Empty:
            pass
        for future in futures:
            if future.done():
                future.result()
        if time.monotonic() > deadline:
            raise TimeoutError(f"{waiting} load processes not ready after {START_TIMEOUT}s")


async def measure(
    kind: str, params: dict[str, Any], seconds: float, procs: int | None
) -> dict[str, Any]:
    """Throughput and latencies of a closed-loop load; escalate to 2 processes if needed.

    `procs=None` is automatic: one process first, and a second run spread over two
    processes when the first one's client CPU reached SATURATED. The faster of the two
    runs counts (if spreading did not help, the client was not what limited the first);
    the other is kept beside it for the record.
    """
    if procs and procs > 1:
        runs = await asyncio.to_thread(in_processes, kind, params, procs, seconds)
        return _figures(runs)
    single = _figures([await KINDS[kind](params, seconds)])
    if procs == 1 or single["client_cpu_max"] < SATURATED:
        return single
    spread = _figures(await asyncio.to_thread(in_processes, kind, params, 2, seconds))
    best, other = (
        (spread, single)
        if spread["per_second"] >= single["per_second"]
        else (
            single,
            spread,
        )
    )
    best["other_run"] = {k: v for k, v in other.items() if k not in SAMPLES}
    return best


def _figures(runs: list[Run]) -> dict[str, Any]:
    latencies = [x for r in runs for x in r.latencies]
    figures = {
        "processes": len(runs),
        "requests": sum(r.count for r in runs),
        "errors": sum(r.errors for r in runs),
        "first_error": next((r.first_error for r in runs if r.first_error), None),
        "per_second": round(sum(r.count / r.wall for r in runs if r.wall), 1),
        "client_cpu": [round(r.cpu_share, 2) for r in runs],
        "client_cpu_max": round(max(r.cpu_share for r in runs), 2),
        "latencies": latencies,
    }
    if len(runs) > 1:  # how far apart the processes' windows opened
        figures["window_skew_s"] = round(
            max(r.started for r in runs) - min(r.started for r in runs), 4
        )
    first_deltas = [x for r in runs for x in r.first_deltas]
    if first_deltas:
        figures["first_deltas"] = first_deltas
    return figures


async def fixed_count(op: Op, workers: int, total: int) -> Run:
    """Run `op` `total` times in all, from `workers` tasks (errors are counted, not retried)."""
    run = Run()
    left = total
    cpu0, t0 = time.process_time(), time.perf_counter()

    async def worker(n: int) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await _timed(run, op, n)

    await asyncio.gather(*(worker(n) for n in range(workers)))
    run.wall = time.perf_counter() - t0
    run.cpu = time.process_time() - cpu0
    return run
