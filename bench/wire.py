"""A lean HTTP/1.1 client: one keep-alive connection, one request at a time.

The figures are the server's, so the client must add as little as it can to each one.
httpx costs ~0.5 ms of Python per request on this machine (`GET /healthz` p50 0.72-0.95 ms
through httpx against 0.21 ms through this client, on the same server, back to back) and
more for larger bodies (a 20-item page: ~1 ms more): over half of what runs 1-8 reported
as a list page's latency was the benchmark's own client. This one writes the request in one
buffer and reads the answer by its framing (Content-Length, chunked, or to the close),
with nothing else between the socket and the timer. `bench/workloads/append.py` still
measures `/healthz` through httpx once, so the difference stays on record.
"""

import asyncio
import contextlib
import json as jsonlib
import os
import ssl
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

_SSL = ssl.create_default_context()  # made once: building one costs ~10 ms
MAX_HEAD = 64 * 1024
API_KEY_ENV = "CONVSTORE_BENCH_API_KEY"


def auth_headers() -> dict[str, str]:
    """`Authorization: Bearer <key>` when CONVSTORE_BENCH_API_KEY is set, for a `--target`
    that wants an API key (OpenAI's own API, a convstore with keys). Taken from the
    environment so that the benchmark's second client process and wrk get it too, and the
    key stays out of the process list."""
    key = os.environ.get(API_KEY_ENV)
    return {"Authorization": f"Bearer {key}"} if key else {}


class WireError(RuntimeError):
    """The server broke HTTP/1.1 framing or closed the connection mid-answer."""


class Response:
    """A status, headers (lower-case names) and the body, read or still streaming."""

    def __init__(
        self, conn: "HttpConnection", method: str, path: str, status: int, headers: dict[str, str]
    ) -> None:
        self._conn = conn
        self.method = method
        self.path = path
        self.status_code = status
        self.headers = headers
        self.content = b""
        self._read = False

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise WireError(f"{self.method} {self.path}: HTTP {self.status_code} {self.text[:300]}")

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives (a chunk at a time for a chunked body)."""
        async for part in self._conn._body(self.headers):
            yield part
        self._read = True

    async def aread(self) -> bytes:
        if not self._read:
            self.content = b"".join([part async for part in self.aiter_bytes()])
        return self.content


class HttpConnection:
    """Requests against `base_url` (a relative path joins it, as in httpx) over one
    connection, opened on first use and again when the server closed it while idle."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        parts = urlsplit(self.base_url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._tls else 80)
        self._host_header = parts.netloc.rsplit("@", 1)[-1]
        self._headers = "".join(f"{name}: {value}\r\n" for name, value in auth_headers().items())
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> "HttpConnection":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def get(self, url: str, params: dict[str, Any] | None = None) -> Response:
        return await self.request("GET", url, params=params)

    async def post(self, url: str, json: Any = None) -> Response:
        return await self.request("POST", url, json=json)

    async def request(
        self, method: str, url: str, json: Any = None, params: dict[str, Any] | None = None
    ) -> Response:
        async with self.stream(method, url, json=json, params=params) as response:
            await response.aread()
        return response

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, url: str, json: Any = None, params: dict[str, Any] | None = None
    ) -> AsyncIterator[Response]:
        """The response once its head arrived; its body is read inside the block (what is
        left unread when the block ends costs the connection, as in httpx)."""
        target = urlsplit(urljoin(self.base_url, url))
        path = target.path + (f"?{target.query}" if target.query else "")
        if params:
            path += ("&" if "?" in path else "?") + urlencode(params)
        body = b"" if json is None else jsonlib.dumps(json, separators=(",", ":")).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self._host_header}\r\n{self._headers}"
        if json is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        request = (head + "\r\n").encode() + body
        response = await self._send(method, path, request)
        try:
            yield response
        except BaseException:
            await self.aclose()
            raise
        if not response._read or response.headers.get("connection", "").lower() == "close":
            await self.aclose()

    async def _send(self, method: str, path: str, request: bytes) -> Response:
        """Write the request and read the answer's head; on a kept-alive connection the
        server closed before answering anything, once more on a new one."""
        reused = self._writer is not None and not self._reader.at_eof()  # type: ignore[union-attr]
        if not reused:
            await self._open()
        try:
            return await self._head(method, path, request)
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            await self.aclose()
            if not reused or (isinstance(exc, asyncio.IncompleteReadError) and exc.partial):
                raise WireError(f"{method} {path}: connection closed: {exc!r}") from exc
        await self._open()
        return await self._head(method, path, request)

    async def _open(self) -> None:
        await self.aclose()
        self._reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(
                self._host,
                self._port,
                ssl=_SSL if self._tls else None,
                server_hostname=self._host if self._tls else None,
                limit=MAX_HEAD,
            ),
            self.timeout,
        )

    async def _head(self, method: str, path: str, request: bytes) -> Response:
        assert self._reader is not None and self._writer is not None
        self._writer.write(request)
        async with asyncio.timeout(self.timeout):
            raw = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *lines = raw[:-4].decode("latin-1").split("\r\n")
        try:
            status = int(status_line.split(" ", 2)[1])
        except (IndexError, ValueError) as exc:
            raise WireError(f"{method} {path}: not an HTTP answer: {status_line!r}") from exc
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return Response(self, method, path, status, headers)

    async def _body(self, headers: dict[str, str]) -> AsyncIterator[bytes]:
        """The body's parts by the answer's framing; each read within the timeout."""
        reader = self._reader
        assert reader is not None
        if "chunked" in headers.get("transfer-encoding", "").lower():
            while True:
                async with asyncio.timeout(self.timeout):
                    size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                    if size == 0:
                        while await reader.readuntil(b"\r\n") != b"\r\n":
                            pass  # trailers
                        return
                    chunk = await reader.readexactly(size + 2)
                yield chunk[:-2]
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length:
                async with asyncio.timeout(self.timeout):
                    body = await reader.readexactly(length)
                yield body
        else:  # framed by the close
            while True:
                async with asyncio.timeout(self.timeout):
                    part = await reader.read(65536)
                if not part:
                    break
                yield part
            headers["connection"] = "close"
