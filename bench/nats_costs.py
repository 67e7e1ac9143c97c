"""`python -m bench.nats_costs`: what one NATS round trip costs on this machine, and how
much of a list page's read is nats-py's Python rather than the server.

Starts its own nats-server (the embedded binary), puts a list page's worth of views in a
KV bucket (the conversation view and 21 items, ~200 bytes each, as convstore stores
them), then times, one request after the other:

- a PING/PONG (the floor of any round trip);
- a direct get of one key through convstore's own path (`events/direct.py`);
- the page: one batched direct get of the 22 keys (23 messages back), through
  convstore's path on nats-py, and the very same request bytes on a bare socket that
  only looks for the end-of-batch status (no parsing).

The gap between the last two is what nats-py spends parsing and dispatching the batch's
messages (bench/README.md, "Session 8 changes").
"""

import argparse
import asyncio
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.server import on_own_server
from events import codec
from events.connection import connect
from events.direct import direct_get, direct_last
from projections.store import open_views
from projections.views import conversation_key, item_key

BUCKET = "probe_views"
CONVERSATION = "conv_probe"
ITEM = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "x" * 120}]}


def _p50_us(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1e6, 1)


async def _timed(call: Callable[[], Awaitable[Any]], n: int) -> float:
    for _ in range(min(n, 50)):  # warm up
        await call()
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - began)
    return _p50_us(samples)


def _raw_socket_p50(host: str, port: int, request: bytes, n: int) -> float:
    """The page's request on a bare socket: the server's answer without any parsing."""
    with socket.create_connection((host, port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.recv(65536)  # INFO
        s.sendall(b'CONNECT {"verbose":false,"headers":true,"no_responders":true}\r\n')
        s.sendall(b"SUB _PROBE.* 1\r\nPING\r\n")
        buf = b""
        while b"PONG" not in buf:
            buf += s.recv(65536)
        pub = b"PUB $JS.API.DIRECT.GET.KV_%s _PROBE.1 %d\r\n%s\r\n" % (
            BUCKET.encode(),
            len(request),
            request,
        )
        samples = []
        for i in range(n + min(n, 50)):
            began = time.perf_counter()
            s.sendall(pub)
            data = b""
            while b"NATS/1.0 204" not in data:
                data += s.recv(1 << 20)
            if i >= min(n, 50):
                samples.append(time.perf_counter() - began)
    return _p50_us(samples)


async def measure(url: str, n: int) -> dict[str, float]:
    nc = await connect([url], "bench-nats-costs")
    try:
        js = nc.jetstream()
        kv = await open_views(js, BUCKET)
        keys = [conversation_key(CONVERSATION)] + [item_key(CONVERSATION, p) for p in range(21)]
        for key in keys:
            await kv.put(key, codec.dumps(ITEM))
        subjects = [f"$KV.{BUCKET}.{k}" for k in keys]
        stream = f"KV_{BUCKET}"
        one = {"last_by_subj": subjects[0]}
        page = {"multi_last": subjects, "batch": len(subjects)}
        found = await direct_last(nc, stream, subjects, 5.0)
        assert len(found) == len(keys), "the probe's keys were not stored"
        result = {
            "ping_pong_us": await _timed(nc.flush, n),
            "direct_get_one_key_us": await _timed(lambda: direct_get(nc, stream, one, 5.0), n),
            "page_22_keys_nats_py_us": await _timed(
                lambda: direct_last(nc, stream, subjects, 5.0), n
            ),
        }
        host, _, port = url.removeprefix("nats://").rpartition(":")
        result["page_22_keys_bare_socket_us"] = await asyncio.to_thread(
            _raw_socket_p50, host, int(port), codec.dumps(page), n
        )
        return result
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.nats_costs", description=__doc__)
    p.add_argument("-n", type=int, default=2000, help="requests per figure (default 2000)")
    args = p.parse_args(argv)
    result = on_own_server(lambda url: measure(url, args.n), sync_always=False)
    for name, value in result.items():
        print(f"{name:32s} p50 {value:8.1f} us")
    gap = result["page_22_keys_nats_py_us"] - result["page_22_keys_bare_socket_us"]
    print(f"{'nats-py per message of the page':32s}     {gap / 23:8.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
