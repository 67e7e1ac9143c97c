"""Request size limits: the body (413, before any handler reads it) and its strings.

`BodyLimit` reads the body of every POST/PUT/PATCH itself, up to the limit, so an
oversized one is refused before it is parsed or held whole: from `Content-Length` when
the client sends it, else as soon as the streamed (chunked) body passes the limit. The
body it read is handed on unchanged, unless it holds `NaN` or `Infinity` as a number:
Python's JSON parser (FastAPI's, and ours) takes those, JSON does not (RFC 8259), and
they would be stored as null. They get the 400 of any body that is not JSON.
"""

import json
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import send_error
from api.errors import APIError, not_json

MIB = 1024 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; see the README's Security section."""

    max_body_bytes: int = 8 * MIB  # as much as one event in the embedded NATS (max_payload)
    max_text_chars: int = 10 * MIB  # any one string in a body; OpenAI's limit for a text
    rate_limit_rps: float = 0.0  # per key and API process; 0 = no limit
    rate_limit_burst: int = 0  # 0 = one second's worth (at least 1)
    idempotency_ttl: float = 24 * 3600.0  # how long an Idempotency-Key is remembered


def too_large(limit: int) -> APIError:
    return APIError(
        413,
        f"Request too large: the body exceeds the limit of {limit} bytes.",
        code="request_too_large",
    )


def content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        declared = content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await send_error(too_large(self.max_bytes), scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await send_error(too_large(self.max_bytes), scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if not_standard_json(body):
            await send_error(not_json(), scope, receive, send)
            return
        await self.app(scope, replay(body, receive), send)


class _NotStandard(ValueError):
    pass


def _refuse(constant: str) -> None:
    raise _NotStandard(constant)


def not_standard_json(body: bytes) -> bool:
    """A JSON body but for a NaN or (-)Infinity number. Parsed only when the bytes hold one
    of those words (almost never: the check costs a substring search per body)."""
    if b"NaN" not in body and b"Infinity" not in body:
        return False
    try:
        json.loads(body, parse_constant=_refuse)
    except _NotStandard:
        return True
    except (ValueError, RecursionError):
        return False  # not JSON at all: the route's parser answers that
    return False


async def read_body(receive: Receive) -> bytes | None:
    """The whole request body; None when the client went away before sending it."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A receive that yields `body` once, then whatever the client sends (a disconnect)."""
    sent = False

    async def _receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return _receive
