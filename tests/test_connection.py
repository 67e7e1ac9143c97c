import logging
import random
import time

import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig

from events.connection import connect, headerless, parse_header_lines


async def test_connect_gives_up_after_its_timeout():
    began = time.monotonic()
    with pytest.raises(ConnectionError):
        await connect(["nats://127.0.0.1:1"], "test", timeout=1.5)
    assert time.monotonic() - began < 5


def _header_blocks() -> list[bytes]:
    """Header blocks as nats-server sends them, and malformed ones."""
    rng = random.Random(7)
    alphabet = [
        b"a",
        b"Z",
        b"-",
        b":",
        b" ",
        b"\t",
        b"\x0b",
        b"\x1c",
        b"\x1f",
        b"\xc3\xa9",
        b"\xff",
        b"\r",
        b"\n",
        b"\r\n",
        b"0",
        b"_",
    ]
    blocks = [
        b"Nats-Stream: KV_x\r\nNats-Subject: $KV.x.k\r\nNats-Sequence: 12\r\n\r\n",
        b"KV-Operation:DEL\r\nNats-Msg-Id:\t id-1 \r\n",
        b"Bad Name: v\r\n:empty name\r\nno colon\r\n\x1cFS: kept\r\nA\x1cB: dropped\r\n",
        b"Caf\xc3\xa9: non-ascii name\r\nValue: caf\xc3\xa9 \xff\r\n",
        b"",
        b"\r\n\r\n",
    ]
    for _ in range(3000):
        blocks.append(b"".join(rng.choice(alphabet) for _ in range(rng.randrange(40))))
    return blocks


def test_fast_header_parsing_matches_nats_py():
    original = NATS._parse_header_lines
    for raw in _header_blocks():
        assert parse_header_lines(raw) == original(raw), raw


async def test_our_connections_parse_headers_fast(nats_url):
    nc = await connect([nats_url], "test")
    try:
        assert nc._parse_header_lines is parse_header_lines
        sub = await nc.subscribe("hdr.test")
        await nc.publish("hdr.test", b"x", headers={"Nats-Msg-Id": "abc", "K": "v w"})
        msg = await sub.next_msg(timeout=2)
        assert msg.headers == {"Nats-Msg-Id": "abc", "K": "v w"}
    finally:
        await nc.close()


async def test_closing_our_own_connection_is_not_reported_as_a_lost_one(nats_url, caplog):
    """Every audit command closed its connection at exit and logged 'lost the NATS
    connection; reconnecting' while doing so."""
    nc = await connect([nats_url], "test-close")
    with caplog.at_level(logging.WARNING, logger="convstore.nats"):
        await nc.close()
    assert "lost the NATS connection" not in caplog.text


async def test_a_headerless_connection_skips_data_headers_and_keeps_status_ones(nats_url):
    """A rebuild's log reader: events arrive without their headers, while the status
    messages nats-py's consumers depend on (here a pull fetch's "no messages") are read."""
    nc = headerless(await connect([nats_url], "test-headerless"))
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="HEADERLESS", subjects=["headerless.>"]))
        sub = await js.pull_subscribe("headerless.>", durable="reader", stream="HEADERLESS")
        with pytest.raises(nats.errors.TimeoutError):  # a 404/408 status, understood
            await sub.fetch(1, timeout=0.5)
        await js.publish("headerless.a", b"data", headers={"Convstore-Tenant": "t"})
        [msg] = await sub.fetch(1, timeout=2)
        assert (msg.data, msg.subject, msg.headers) == (b"data", "headerless.a", None)
        assert msg.metadata.sequence.stream == 1
    finally:
        await js.delete_stream("HEADERLESS")
        await nc.close()
