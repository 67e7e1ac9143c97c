import asyncio
import logging
from typing import Any

import pytest
from uvicorn.protocols.http import httptools_impl

from api.one_write import OneWriteCycle, install


class Transport:
    """Records each write, as the socket would see them."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Flow:
    write_paused = False


def _cycle(transport: Transport, method: str = "GET", keep_alive: bool = True) -> OneWriteCycle:
    return OneWriteCycle(
        scope={"method": method, "http_version": "1.1"},
        transport=transport,
        flow=Flow(),
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )


def _start(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": 200, "headers": headers}


async def test_head_and_body_go_out_in_one_write() -> None:
    t = Transport()
    cycle = _cycle(t)
    await cycle.send(_start([(b"content-length", b"2")]))
    assert t.writes == []
    await cycle.send({"type": "http.response.body", "body": b"ok"})
    assert len(t.writes) == 1
    assert t.writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and t.writes[0].endswith(b"\r\n\r\nok")
    assert cycle.response_complete


async def test_a_stream_sends_its_head_at_once() -> None:
    """A subscriber must see the 200 before the first event, which may be long in coming."""
    t = Transport()
    cycle = _cycle(t)
    await cycle.send(_start([(b"content-type", b"text/event-stream")]))
    assert len(t.writes) == 1 and t.writes[0].endswith(b"transfer-encoding: chunked\r\n\r\n")
    await cycle.send({"type": "http.response.body", "body": b"a", "more_body": True})
    await cycle.send({"type": "http.response.body", "body": b""})
    assert t.writes[1:] == [b"1\r\na\r\n", b"0\r\n\r\n"]


async def test_a_head_request_still_gets_its_head() -> None:
    """uvicorn writes no body for HEAD: the held head must not be lost."""
    t = Transport()
    cycle = _cycle(t, method="HEAD")
    await cycle.send(_start([(b"content-length", b"5")]))
    await cycle.send({"type": "http.response.body", "body": b"hello"})
    assert len(t.writes) == 1 and t.writes[0].endswith(b"content-length: 5\r\n\r\n")


async def test_the_head_is_written_before_the_connection_closes() -> None:
    t = Transport()
    cycle = _cycle(t, keep_alive=False)
    await cycle.send(_start([(b"content-length", b"0")]))
    await cycle.send({"type": "http.response.body", "body": b""})
    assert len(t.writes) == 1 and b"connection: close" in t.writes[0] and t.closed


async def test_a_body_larger_than_announced_still_fails() -> None:
    t = Transport()
    cycle = _cycle(t)
    await cycle.send(_start([(b"content-length", b"1")]))
    with pytest.raises(RuntimeError):
        await cycle.send({"type": "http.response.body", "body": b"too long"})


def test_install_makes_uvicorn_use_it() -> None:
    original = httptools_impl.RequestResponseCycle
    try:
        assert install() and install()
        assert httptools_impl.RequestResponseCycle is OneWriteCycle
    finally:
        httptools_impl.RequestResponseCycle = original
