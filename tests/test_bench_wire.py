"""bench/wire.py: the benchmark's lean HTTP/1.1 client reads every framing a server may
use, keeps one connection, and reconnects only when the server closed an idle one."""

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from bench import wrk
from bench.wire import API_KEY_ENV, HttpConnection, WireError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes, bytes], Awaitable[None]]


class Server:
    """An HTTP/1.1 server on a real socket that answers with whatever `handler` writes,
    and counts the connections and requests it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []  # (request line, body)
        self.headers: list[list[bytes]] = []  # each request's header lines

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def __aexit__(self, *_: object) -> None:
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                line, *headers = head[:-4].split(b"\r\n")
                length = 0
                for header in headers:
                    name, _, value = header.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests.append((line, body))
                self.headers.append(headers)
                await self.handler(reader, writer, line, body)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def answer(body: bytes, status: str = "200 OK") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


async def test_requests_share_one_connection_and_carry_path_query_and_json() -> None:
    async def echo(_r: asyncio.StreamReader, w: asyncio.StreamWriter, line: bytes, body: bytes):
        w.write(answer(json.dumps({"line": line.decode(), "body": body.decode()}).encode()))

    server = Server(echo)
    async with server as url, HttpConnection(url) as client:
        params = {"limit": 20, "order": "asc"}
        got = (await client.get("conversations/c1/items", params=params)).json()
        assert got["line"] == "GET /v1/conversations/c1/items?limit=20&order=asc HTTP/1.1"
        posted = await client.post("conversations", json={"metadata": {"k": "v"}})
        assert posted.status_code == 200
        assert json.loads(posted.json()["body"]) == {"metadata": {"k": "v"}}
        assert posted.json()["line"] == "POST /v1/conversations HTTP/1.1"
        absolute = (await client.get(url.removesuffix("/v1") + "/healthz")).json()
        assert absolute["line"] == "GET /healthz HTTP/1.1"
    assert server.connections == 1 and len(server.requests) == 3


async def test_a_chunked_body_arrives_chunk_by_chunk_as_it_is_sent() -> None:
    go_on = asyncio.Event()

    async def sse(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _l: bytes, _b: bytes):
        w.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        w.write(b"7\r\nfirst\n\n\r\n")
        await w.drain()
        await go_on.wait()  # the second chunk only once the client holds the first
        w.write(b"8\r\nsecond\n\n\r\n0\r\n\r\n")
        w.write(answer(b"next"))  # only for the request that follows on the connection

    server = Server(sse)
    async with server as url, HttpConnection(url) as client:
        parts: list[bytes] = []
        async with client.stream("POST", "responses", json={"stream": True}) as response:
            assert response.status_code == 200
            async for part in response.aiter_bytes():
                parts.append(part)
                go_on.set()
        assert parts == [b"first\n\n", b"second\n\n"]
        # The whole body was read, so the connection is still in step: the next answer
        # is read from where the chunked one ended.
        assert (await client.get("x")).content == b"next"
    assert server.connections == 1


async def test_a_body_framed_by_the_close_is_read_whole_and_the_next_request_reconnects() -> None:
    async def close_framed(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _l: bytes, _b: bytes):
        w.write(b"HTTP/1.1 200 OK\r\n\r\nall of it")
        await w.drain()
        w.close()

    server = Server(close_framed)
    async with server as url, HttpConnection(url) as client:
        assert (await client.get("a")).content == b"all of it"
        assert (await client.get("b")).content == b"all of it"
    assert server.connections == 2 and len(server.requests) == 2


async def test_an_idle_connection_the_server_closed_is_replaced_and_the_request_sent_once() -> None:
    async def then_close(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _l: bytes, _b: bytes):
        w.write(answer(b"ok"))
        await w.drain()
        w.close()  # as uvicorn does after its keep-alive timeout

    server = Server(then_close)
    async with server as url, HttpConnection(url) as client:
        assert (await client.post("conversations", json={})).content == b"ok"
        await asyncio.sleep(0.05)
        assert (await client.post("conversations", json={})).content == b"ok"
    assert server.connections == 2
    assert len(server.requests) == 2  # nothing was sent twice


async def test_a_connection_cut_mid_answer_is_an_error_not_a_retry() -> None:
    async def cut(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _l: bytes, _b: bytes):
        w.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        await w.drain()
        w.close()

    server = Server(cut)
    async with server as url, HttpConnection(url) as client:
        with pytest.raises(WireError, match="connection closed"):
            await client.post("conversations", json={})
    assert len(server.requests) == 1


async def test_a_server_that_does_not_answer_times_out() -> None:
    async def silent(_r: asyncio.StreamReader, _w: asyncio.StreamWriter, _l: bytes, _b: bytes):
        await asyncio.sleep(5)

    async with Server(silent) as url, HttpConnection(url, timeout=0.2) as client:
        with pytest.raises(TimeoutError):
            await client.get("slow")


async def test_an_error_status_is_returned_and_raise_for_status_names_it() -> None:
    async def missing(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _l: bytes, _b: bytes):
        w.write(answer(b'{"error": {"message": "nope"}}', "404 Not Found"))

    async with Server(missing) as url, HttpConnection(url) as client:
        response = await client.get("conversations/x")
        assert response.status_code == 404 and response.json()["error"]["message"] == "nope"
        with pytest.raises(WireError, match="GET /v1/conversations/x: HTTP 404"):
            response.raise_for_status()


async def test_an_api_key_in_the_environment_goes_with_every_request(monkeypatch) -> None:
    """CONVSTORE_BENCH_API_KEY: a --target that wants a key (OpenAI's API, a convstore
    with keys) gets it from every client the benchmark drives, wrk included; unset, no
    Authorization header at all."""

    async def ok(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _l: bytes, _b: bytes):
        w.write(answer(b"{}"))

    server = Server(ok)
    async with server as url:
        async with HttpConnection(url) as client:
            await client.get("models")
        monkeypatch.setenv(API_KEY_ENV, "sk-bench-123")
        async with HttpConnection(url) as client:
            await client.post("conversations", json={})
    assert not any(h.lower().startswith(b"authorization") for h in server.headers[0])
    assert b"Authorization: Bearer sk-bench-123" in server.headers[1]
    assert '["Authorization"] = [[Bearer sk-bench-123]]' in wrk.lua_script(["/v1/x"], {"a": 1})
    monkeypatch.delenv(API_KEY_ENV)
    assert "Authorization" not in wrk.lua_script(["/v1/x"], None)
