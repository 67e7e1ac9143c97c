"""The projector lease against a real nats-server: one holder, takeover, hand-over."""

import asyncio
import time

from convstore.embedded_nats import EmbeddedNats
from events.connection import connect
from projections.active import meta_bucket
from projections.leader import Lease
from projections.worker import close_quietly

TTL = 1.0


async def _leases(url: str, n: int) -> tuple[list[Lease], list]:
    conns = [await connect([url], f"lease{i}") for i in range(n)]
    kvs = [await meta_bucket(nc.jetstream(timeout=2)) for nc in conns]
    return [Lease(kv, f"holder{i}", ttl=TTL) for i, kv in enumerate(kvs)], conns


async def test_a_standby_takes_over_only_after_a_silent_ttl(fresh_nats):
    (a, b), conns = await _leases(fresh_nats, 2)
    stop = asyncio.Event()
    assert await a.acquire(stop)
    keeping = asyncio.create_task(a.keep())
    waiting = asyncio.create_task(b.acquire(stop))
    await asyncio.sleep(3 * TTL)
    assert not waiting.done(), "a standby took a lease that was being renewed"

    keeping.cancel()  # the leader goes silent, as if killed
    assert await asyncio.wait_for(waiting, 5 * TTL)
    # a whole ttl after the last renewal was sent, by the same (monotonic) clock
    assert time.monotonic() - a.renewed_at >= TTL, "took over before the lease ran out"
    # the old leader learns it lost the lease at its next renewal
    await asyncio.wait_for(a.keep(), 2 * TTL)
    for nc in conns:
        await nc.close()


async def test_a_clean_release_hands_over_at_once(fresh_nats):
    (a, b, c), conns = await _leases(fresh_nats, 3)
    stop = asyncio.Event()
    assert await a.acquire(stop)
    waiting = [asyncio.create_task(x.acquire(stop)) for x in (b, c)]
    await asyncio.sleep(TTL / 2)
    await a.release()
    done, pending = await asyncio.wait(waiting, timeout=TTL * 0.8)
    assert len(done) == 1, "exactly one standby gets the released lease"
    stop.set()
    assert [await p for p in pending] == [False]
    for nc in conns:
        await nc.close()


async def test_a_leader_that_cannot_renew_steps_down_before_the_ttl(tmp_path):
    nats = EmbeddedNats(tmp_path / "nats", sync_always=False)
    nats.start()
    try:
        (a,), conns = await _leases(nats.url, 1)
        assert await a.acquire(asyncio.Event())
        keeping = asyncio.create_task(a.keep())
        await asyncio.sleep(TTL)
        nats.stop()
        await asyncio.wait_for(keeping, 2 * TTL)
        # it stopped at most ttl - margin after its last good renewal was sent, so before
        # any standby (which waits a whole ttl after seeing that renewal) could start
        assert time.monotonic() - a.renewed_at < TTL - a.margin + 0.1
        await close_quietly(conns[0].close())
    finally:
        nats.stop()
