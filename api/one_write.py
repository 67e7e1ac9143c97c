"""A response's status line and headers written together with its body.

uvicorn's httptools protocol writes the head as soon as the app sends
`http.response.start`, and the body on the next message: two socket writes per
response. On loopback each write is a system call that also wakes the client, and the
two were ~40% of an API process's CPU under load (py-spy, 64 appends in flight); one
write saves about a third of that. Only a response of announced length is held (its body
is ready when its head is sent); a stream's head goes out at once, as before, so a
subscriber sees its 200 before the first event. uvicorn has no setting for it, so the cycle class
its protocol instantiates is replaced by a subclass (`install`), only where it has the
shape this was written against; otherwise uvicorn is left as it is.
"""

import asyncio
from typing import Any

from uvicorn.protocols.http import httptools_impl


class _Held:
    """Stands in for the transport while uvicorn writes the head: keeps the bytes."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class _Prefixed:
    """Stands in for the transport while uvicorn writes the first body part: the held
    head goes out in front of it, in one write (or before anything else it does)."""

    def __init__(self, transport: asyncio.Transport, head: bytes) -> None:
        self.transport = transport
        self.head = head

    def write(self, data: bytes) -> None:
        head, self.head = self.head, b""
        self.transport.write(head + data)

    def flush(self) -> None:
        if self.head:
            self.write(b"")

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        self.flush()
        return getattr(self.transport, name)


class OneWriteCycle(httptools_impl.RequestResponseCycle):  # type: ignore[misc]
    _head = b""

    async def send(self, message: Any) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            transport, held = self.transport, _Held(self.transport)
            self.transport = held
            try:
                await super().send(message)
            finally:
                self.transport = transport
            if self.chunked_encoding is False:  # a content-length: the body comes next
                self._head = held.data
            elif held.data:
                transport.write(held.data)
            return
        if not self._head:
            await super().send(message)
            return
        transport, prefixed = self.transport, _Prefixed(self.transport, self._head)
        self._head = b""
        self.transport = prefixed
        try:
            await super().send(message)
        finally:
            self.transport = transport
            if not transport.is_closing():
                prefixed.flush()


def install() -> bool:
    """Use OneWriteCycle in this process's uvicorn httptools connections, if this uvicorn
    has the cycle class and send method it subclasses. True when installed."""
    cycle = getattr(httptools_impl, "RequestResponseCycle", None)
    if cycle is OneWriteCycle:
        return True
    if cycle is None or not callable(getattr(cycle, "send", None)):
        return False
    httptools_impl.RequestResponseCycle = OneWriteCycle
    return True
