"""Rebuild: all views from a log of N events (the online `rebuild` into a new KV bucket),
beside the rate at which a raw ordered consumer reads the same log.

The log is filled directly through events.store.EventStore (atomic batches of up to 20
events, as the API writes them, 100 events per conversation), not over HTTP: filling a
million events over HTTP would take longer than everything else together. It runs on
a bare nats-server with serve's configuration and no projector, so nothing else folds
the log meanwhile; the raw baseline reads the same stream on the same server.

Figures: `rebuild` (projections.rebuild.rebuild, the real command: fold into a fresh
KV bucket, create the new consumer, flip the pointer), timed until the new views are the
live ones; beside it the whole command, which then waits a fixed 2.5 s for readers to
move over before it drops the old generation (`with_retirement_*`); and, as extras, its
fold phase alone and a fold into MemoryViews (the fold's CPU ceiling without KV writes,
in one process). The rebuild folds in as many processes as `convstore rebuild` would
(`CONVSTORE_REBUILD_SHARDS`, default 1: projections/shards.py).
"""

import asyncio
import time
from typing import Any

from bench import baseline
from bench.payload import stored_item
from bench.procs import CpuMeter
from convstore.settings import Settings
from events import commands
from events.connection import connect
from events.ids import new_id
from events.schema import ConversationCreated, EventBase, ItemAdded
from events.store import EventStore, Head, ensure_stream
from projections.rebuild import fold_log, rebuild
from projections.store import MemoryViews

PER_CONVERSATION = 100  # events: ConversationCreated and 99 ItemAdded
BATCH = 20
WRITERS = 32  # conversations filled concurrently


def _items(conversation_id: str, count: int) -> list[EventBase]:
    return [ItemAdded(conversation_id=conversation_id, item=stored_item()) for _ in range(count)]


async def fill_conversation(store: EventStore, events: int) -> None:
    conversation_id = new_id("conv")
    created = ConversationCreated(conversation_id=conversation_id, created_at=int(time.time()))
    first = [created, *_items(conversation_id, min(BATCH, events) - 1)]
    await commands.create(store, first)
    left = events - len(first)
    while left > 0:
        batch = _items(conversation_id, min(BATCH, left))

        async def decide(_: Head, batch: list[EventBase] = batch) -> list[EventBase]:
            return batch

        await commands.decide_and_append(store, conversation_id, decide)
        left -= len(batch)


async def fill_log(store: EventStore, events: int) -> dict[str, Any]:
    sizes = [PER_CONVERSATION] * (events // PER_CONVERSATION)
    if events % PER_CONVERSATION:
        sizes.append(events % PER_CONVERSATION)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for size in sizes:
        queue.put_nowait(size)

    async def writer() -> None:
        while not queue.empty():
            await fill_conversation(store, queue.get_nowait())

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(WRITERS)))
    seconds = time.perf_counter() - start
    return {
        "events": events,
        "conversations": len(sizes),
        "seconds": round(seconds, 2),
        "per_second": round(events / seconds, 1),
    }


async def run(nats_url: str, events: int, pids: dict[str, int]) -> dict[str, Any]:
    nc = await connect([nats_url], "bench-rebuild")
    js = nc.jetstream(timeout=30)
    await ensure_stream(js)
    store = EventStore(nc, js, timeout=30)
    try:
        filled = await fill_log(store, events)
        end = await store.last_seq()
        with CpuMeter(pids) as ordered_cpu:
            ordered = await baseline.ordered_read_rate(nats_url, end)
        pull = await baseline.pull_read_rate(nats_url, end)

        start = time.perf_counter()
        with CpuMeter(pids) as memory_cpu:
            folded = await fold_log(store, MemoryViews())
        memory_seconds = time.perf_counter() - start

        shards = Settings().rebuild_shard_count()
        marks: list[float] = []
        live: list[float] = []
        start = time.perf_counter()
        with CpuMeter(pids) as rebuild_cpu:
            last, _ = await rebuild(
                store,
                progress=lambda _: marks.append(time.perf_counter()),
                live=lambda: live.append(time.perf_counter()),
                shards=shards,
            )
        total = time.perf_counter() - start
        seconds = live[0] - start
        fold_seconds = (marks[-1] if marks else live[0]) - start
    finally:
        await nc.drain()
    return {
        "log": filled,
        "raw_ordered_consumer": {**ordered, "cpu": ordered_cpu.rounded()},
        "raw_pull_consumer_256": pull,
        "rebuild": {
            "events": last,
            "shards": shards,
            "seconds": round(seconds, 2),
            "per_second": round(last / seconds, 1),
            "with_retirement_seconds": round(total, 2),
            "with_retirement_per_second": round(last / total, 1),
            "fold_phase_seconds": round(fold_seconds, 2),
            "fold_phase_per_second": round(last / fold_seconds, 1) if fold_seconds else None,
            "cpu": rebuild_cpu.rounded(),
        },
        "fold_into_memory": {
            "events": folded,
            "seconds": round(memory_seconds, 2),
            "per_second": round(folded / memory_seconds, 1),
            "cpu": memory_cpu.rounded(),
        },
    }
