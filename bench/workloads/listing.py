"""List: `limit=20` newest-first pages, and `after=`-paged oldest-first pages, on a
conversation of 100 items and one of 10,000.

Pages are meant to cost O(limit) whatever the conversation's length, so the p50 at
10,000 items should stay within 1.2x of the p50 at 100. The two sizes are measured
interleaved, request by request, so that a noisy neighbour on the machine weighs on
both the same.
"""

import asyncio
import time
from typing import Any

from bench import load
from bench.context import Context
from bench.http import HttpFailure, add_items, create_conversation, list_items
from bench.procs import CpuMeter
from bench.stats import ratio, summary
from bench.wire import HttpConnection

BATCH = 20  # the API's limit of items per call


async def fill(client: HttpConnection, items: int) -> str:
    conversation = await create_conversation(client, items=min(items, BATCH))
    added = min(items, BATCH)
    while added < items:
        count = min(BATCH, items - added)
        await add_items(client, conversation, count)
        added += count
    return conversation


async def readable(client: HttpConnection, conversation: str, timeout: float = 300.0) -> None:
    """With --target: wait out a 503 while that server's views catch up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await list_items(client, conversation)
            return
        except HttpFailure:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(1.0)


class Pager:
    """Walks a conversation oldest-first with `after=`, starting over at the end."""

    def __init__(self, conversation: str) -> None:
        self.conversation = conversation
        self.after: str | None = None

    async def next(self, client: HttpConnection) -> dict[str, Any]:
        page = await list_items(client, self.conversation, order="asc", after=self.after)
        self.after = page["last_id"] if page["has_more"] else None
        return page


async def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    small, large = sizes.list_sizes
    async with load.http_client(ctx.base_url) as client:
        conversations = {small: await fill(client, small), large: await fill(client, large)}
        await ctx.settle()
        for conversation in conversations.values():
            await readable(client, conversation)
        desc: dict[int, list[float]] = {small: [], large: []}
        asc: dict[int, list[float]] = {small: [], large: []}
        pagers = {size: Pager(c) for size, c in conversations.items()}
        short_pages = 0
        with CpuMeter(ctx.pids()) as cpu:
            for n in range(sizes.warmup + sizes.list_requests):
                for size, conversation in conversations.items():
                    start = time.perf_counter()
                    page = await list_items(client, conversation, order="desc")
                    middle = time.perf_counter()
                    paged = await pagers[size].next(client)
                    end = time.perf_counter()
                    if len(page["data"]) != 20 or not paged["data"]:
                        short_pages += 1
                    if n >= sizes.warmup:
                        desc[size].append(middle - start)
                        asc[size].append(end - middle)
    result: dict[str, Any] = {"sizes": [small, large], "short_pages": short_pages}
    for name, series in (("desc_limit20", desc), ("asc_after_paged", asc)):
        s, lg = summary(series[small]), summary(series[large])
        result[name] = {
            str(small): s,
            str(large): lg,
            "p50_ratio_large_to_small": _r(ratio(lg.get("p50_ms"), s.get("p50_ms"))),
        }
    result["cpu"] = cpu.rounded()
    return result


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
