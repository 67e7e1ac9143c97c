"""`python -m bench.persist_modes`: what a views bucket costs stored with fsync and stored
with JetStream's `persist_mode: async` (how `open_views` makes them), under both of the
embedded server's fsync settings.

For each server setting (`sync_interval: always`, nats-server's default) it starts its
own nats-server and makes two KV buckets, one as nats-py makes them and one as
`open_views` does, then times on each, one request after the other: a put of a
~900-byte view (PubAck awaited), and a direct get of one key while four other tasks put
keys into the same bucket (a read right after a write meets the projector writing).
"""

import argparse
import asyncio
import time

from bench.server import on_own_server
from events.connection import connect
from events.direct import direct_get
from projections.store import open_bucket, open_views

VALUE = b"x" * 900
WRITERS = 4


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _bucket(url: str, bucket: str, n: int) -> dict[str, float]:
    writer = await connect([url], "bench-persist-writer")
    reader = await connect([url], "bench-persist-reader")
    try:
        js = writer.jetstream()
        opened = open_views(js, bucket) if bucket.startswith("async") else open_bucket(js, bucket)
        kv = await opened
        put: list[float] = []
        for i in range(n):
            began = time.perf_counter()
            await kv.put(f"k{i % 100}", VALUE)
            put.append(time.perf_counter() - began)
        stop = asyncio.Event()

        async def write(w: int) -> None:
            i = 0
            while not stop.is_set():
                await kv.put(f"w{w}.{i % 50}", VALUE)
                i += 1

        writers = [asyncio.create_task(write(w)) for w in range(WRITERS)]
        get: list[float] = []
        request = {"last_by_subj": f"$KV.{bucket}.k5"}
        for _ in range(n):
            began = time.perf_counter()
            await direct_get(reader, f"KV_{bucket}", request, 5.0)
            get.append(time.perf_counter() - began)
        stop.set()
        await asyncio.gather(*writers)
        return {
            "put_p50_ms": _p(put, 0.5),
            "put_p99_ms": _p(put, 0.99),
            "get_beside_writers_p50_ms": _p(get, 0.5),
            "get_beside_writers_p99_ms": _p(get, 0.99),
        }
    finally:
        await reader.close()
        await writer.close()


async def measure(url: str, n: int) -> dict[str, dict[str, float]]:
    return {
        "fsynced bucket": await _bucket(url, "fsynced_views", n),
        "async bucket": await _bucket(url, "async_views", n),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.persist_modes", description=__doc__)
    p.add_argument("-n", type=int, default=2000, help="requests per figure (default 2000)")
    args = p.parse_args(argv)
    print(f"{'server / bucket':40s} {'put p50':>8s} {'p99':>6s} {'get p50':>8s} {'p99':>6s} (ms)")
    for sync_always, setting in ((True, "sync_interval: always"), (False, "default fsync")):
        result = on_own_server(lambda url: measure(url, args.n), sync_always)
        for kind, r in result.items():
            print(
                f"{setting + ' / ' + kind:40s} {r['put_p50_ms']:8.2f} {r['put_p99_ms']:6.2f} "
                f"{r['get_beside_writers_p50_ms']:8.2f} {r['get_beside_writers_p99_ms']:6.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
