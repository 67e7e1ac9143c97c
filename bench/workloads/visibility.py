"""Write -> read visibility: POST an item on one connection, then list the conversation's
newest items on another; the item must be there (read-your-writes across connections,
as across API replicas).

A stale read is a list that answers 200 without the item just acknowledged. The pair's
latency is what a client sees from sending the write to holding the read.
"""

import time
from typing import Any

from bench import load
from bench.context import Context
from bench.http import HttpFailure, add_items, create_conversation, list_items
from bench.procs import CpuMeter
from bench.stats import summary


async def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes
    pairs: list[float] = []
    reads: list[float] = []
    stale = errors = 0
    first_error: str | None = None
    async with (
        load.http_client(ctx.base_url) as writer,
        load.http_client(ctx.base_url) as reader,
    ):
        conversation = await create_conversation(writer)
        with CpuMeter(ctx.pids()) as cpu:
            for n in range(sizes.warmup + sizes.visibility_pairs):
                start = time.perf_counter()
                (item_id,) = await add_items(writer, conversation)
                written = time.perf_counter()
                try:
                    page = await list_items(reader, conversation, order="desc")
                except HttpFailure as exc:
                    errors += 1
                    first_error = first_error or str(exc)
                    continue
                done = time.perf_counter()
                if n < sizes.warmup:
                    continue
                if not page["data"] or page["data"][0]["id"] != item_id:
                    stale += 1
                pairs.append(done - start)
                reads.append(done - written)
    return {
        "pairs": sizes.visibility_pairs,
        "stale_reads": stale,
        "read_errors": errors,
        "first_error": first_error,
        "pair_latency": summary(pairs),
        "read_latency": summary(reads),
        "cpu": cpu.rounded(),
    }
