"""The benchmark's spread load (`bench.load.in_processes`): a load run in several
processes measures one window, opened once all of them are ready, and a process
that fails before its window fails the load at once instead of leaving the others waiting."""

import asyncio
import time

import nats
import pytest
from nats.js.api import StreamConfig

from bench import load


async def _stream(url: str, name: str, subject: str) -> None:
    nc = await nats.connect(url)
    try:
        await nc.jetstream().add_stream(StreamConfig(name=name, subjects=[f"{subject}.>"]))
    finally:
        await nc.close()


def _raw(url: str, subject: str) -> dict[str, object]:
    return {
        "nats_url": url,
        "payload": b"x" * 100,
        "subject": subject,
        "stream": subject.upper(),
        "workers": 4,
    }


def test_spread_load_processes_measure_one_window(nats_url: str) -> None:
    asyncio.run(_stream(nats_url, "BENCH_SPREAD", "bench_spread"))
    runs = load.in_processes("raw_publish", _raw(nats_url, "bench_spread"), 2, 0.5)
    assert len(runs) == 2
    assert all(r.count > 0 and r.errors == 0 and r.wall >= 0.5 for r in runs)
    # Both windows opened at the word to go, whichever process spawned first.
    starts = sorted(r.started for r in runs)
    assert starts[1] - starts[0] < 0.25
    figures = load._figures(runs)
    assert figures["processes"] == 2 and figures["window_skew_s"] < 0.25


def test_a_load_process_that_fails_before_its_window_fails_the_load_at_once() -> None:
    start = time.monotonic()
    try:
        load.in_processes("no_such_load", {"workers": 2}, 2, 0.5)
    except KeyError as exc:  # raised in the load process, and again here
        assert "no_such_load" in str(exc)
    else:
        raise AssertionError("a load whose processes failed did not fail")
    # Not the gate's START_TIMEOUT: the parent saw the processes end before they were ready.
    assert time.monotonic() - start < load.START_TIMEOUT / 2


async def test_a_raw_connection_to_no_server_fails_within_its_bound():
    """nats-py alone retries a first connect for ~2 minutes; the benchmark's stops sooner."""
    from convstore.embedded_nats import free_port

    start = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - a timeout, or nats-py's own error
        await load.stock_connect(f"nats://127.0.0.1:{free_port()}", "nobody", within=1.0)
    assert time.monotonic() - start < 5
