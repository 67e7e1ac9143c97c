"""`Idempotency-Key` on every POST: a retry returns the first answer and writes nothing new.

A record per (tenant, method, path, key) lives in the JetStream KV bucket
`convstore_idempotency`, whose max_age (24 h by default) is how long a key is remembered
after its last write. The first request claims the key atomically (KV `create`), runs,
then stores its status, headers and body; a retry with the same body replays them, one
with another body (or query) gets 409. A concurrent retry waits for the first to finish
(up to WAIT seconds, then 409 with Retry-After). 5xx answers and transient 409/429 are
not kept (the claim is released), so a retry after an outage runs again. A claim whose
owner died (no heartbeat for LEASE seconds) is taken over by the next retry: that one
window, a crash after the write and before the record, can write twice.

It is an ASGI middleware inside `Authenticate` (it needs the tenant) and `BodyLimit`
(the body is bounded before it is hashed), so every POST route gets it without code.
"""

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.auth import send_error
from api.errors import NATS_DOWN, APIError, invalid, unavailable
from api.keys import Principal
from api.limits import read_body, replay
from events.connection import cancel_for_sure
from projections.store import open_bucket

log = logging.getLogger("convstore.api")

BUCKET = "convstore_idempotency"
HEADER = b"idempotency-key"
REPLAYED = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
LEASE = 30.0  # a pending claim not refreshed for this long has lost its owner
HEARTBEAT = 10.0  # how often the owner refreshes its claim
WAIT = 10.0  # how long a concurrent retry waits for the first request's answer
TRANSIENT = frozenset({409, 429})  # like 5xx: not kept, a retry should run again
_SKIP_HEADERS = frozenset({"content-length", "date", "server"})


async def open_store(
    js: JetStreamContext, replicas: int, ttl: float, max_payload: int
) -> "IdempotencyStore":
    """The bucket (created when missing; an existing one keeps its max_age)."""
    kv = await open_bucket(js, BUCKET, replicas, ttl=ttl)
    return IdempotencyStore(kv, max_record=max_payload - 1024)


@dataclass
class IdempotencyStore:
    kv: KeyValue
    max_record: int  # bytes one record may take (a NATS message)


def _digest(*parts: bytes) -> str:
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _mismatch() -> APIError:
    return APIError(
        409,
        "Keys for idempotent requests can only be used with the same parameters they were "
        "first used with. Try using a key other than the one used in the original request.",
        param="Idempotency-Key",
        code="idempotency_key_reused",
    )


def _in_progress() -> APIError:
    return APIError(
        409,
        "A request with this Idempotency-Key is still in progress; retry shortly.",
        param="Idempotency-Key",
        code="idempotency_request_in_progress",
        headers={"Retry-After": "1"},
    )


def _not_replayable(record: dict[str, Any]) -> APIError:
    why = "was streamed" if record.get("streamed") else "is too large to keep"
    return APIError(
        409,
        f"The request with this Idempotency-Key already ran (status {record.get('status')}), "
        f"but its response {why}, so it cannot be replayed; read the result instead.",
        param="Idempotency-Key",
        code="idempotency_response_unavailable",
    )


@dataclass
class Capture:
    """Holds a response back until its record is stored; lets an event stream through."""

    send: Send
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    streamed: bool = False
    start: Message | None = None

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.headers = list(message.get("headers", ()))
            self.streamed = any(
                k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                for k, v in self.headers
            )
            if self.streamed:
                await self.send(message)
            else:
                self.start = message
        elif self.streamed:
            await self.send(message)
        elif message["type"] == "http.response.body":
            self.body.append(message.get("body", b""))

    async def flush(self) -> None:
        if self.start is not None:
            await self.send(self.start)
            await self.send({"type": "http.response.body", "body": b"".join(self.body)})

    def record(self, fingerprint: str, max_bytes: int) -> bytes:
        body = b"".join(self.body)
        record: dict[str, Any] = {
            "state": "done",
            "fingerprint": fingerprint,
            "status": self.status,
            "streamed": self.streamed,
        }
        if not self.streamed:
            try:
                record["body"], record["encoding"] = body.decode(), "utf-8"
            except UnicodeDecodeError:
                record["body"], record["encoding"] = base64.b64encode(body).decode(), "base64"
            record["headers"] = [
                [k.decode("latin-1"), v.decode("latin-1")]
                for k, v in self.headers
                if k.decode("latin-1").lower() not in _SKIP_HEADERS
            ]
        data = json.dumps(record, separators=(",", ":")).encode()
        if len(data) > max_bytes:
            record.pop("body", None)
            record["too_large"] = True
            data = json.dumps(record, separators=(",", ":")).encode()
        return data


@dataclass
class Claim:
    """This request owns the key: keeps the claim alive, then stores or releases it."""

    store: IdempotencyStore
    key: str
    fingerprint: str
    revision: int
    token: str

    @staticmethod
    def pending(fingerprint: str, token: str) -> bytes:
        record = {"state": "pending", "fingerprint": fingerprint, "token": token}
        return json.dumps({**record, "beat": time.time()}).encode()

    async def keep_alive(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT)
            with contextlib.suppress(Exception):
                self.revision = await self.store.kv.update(
                    self.key, self.pending(self.fingerprint, self.token), last=self.revision
                )

    async def _current_revision(self) -> int | None:
        """Our claim's revision now (a heartbeat cut short may have moved it), or None when
        the key is no longer ours."""
        try:
            entry = await self.store.kv.get(self.key)
        except KeyNotFoundError:
            return None
        record = json.loads(entry.value or b"{}")
        return entry.revision if record.get("token") == self.token else None

    async def _write(self, value: bytes | None) -> None:
        """Store the final record (or delete the claim for None), on our revision only."""
        for _ in range(2):
            try:
                if value is None:
                    await self.store.kv.delete(self.key, last=self.revision)
                else:
                    await self.store.kv.update(self.key, value, last=self.revision)
                return
            except KeyWrongLastSequenceError:
                revision = await self._current_revision()
                if revision is None:
                    break
                self.revision = revision
        log.warning("idempotency record %s was taken over before this request finished", self.key)

    async def finish(self, capture: Capture) -> None:
        keep = capture.status < 500 and capture.status not in TRANSIENT
        try:
            await self._write(
                capture.record(self.fingerprint, self.store.max_record) if keep else None
            )
        except Exception as exc:  # the answer still goes out; a retry may run again
            log.warning("idempotency record %s not stored: %s", self.key, exc)

    async def release(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._write(None), 2.0)


def replay_response(record: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    raw = record.get("body", "")
    body = base64.b64decode(raw) if record.get("encoding") == "base64" else raw.encode()
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in record.get("headers", [])]
    headers += [
        (b"content-length", str(len(body)).encode()),
        (REPLAYED.lower().encode(), b"true"),
    ]
    return int(record["status"]), headers, body


class Idempotency:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = header(scope, HEADER) if scope["type"] == "http" else None
        principal = scope.get("state", {}).get("principal")
        store = getattr(scope["app"].state, "idempotency", None) if "app" in scope else None
        if (
            key is None
            or scope["method"] != "POST"
            or not isinstance(principal, Principal)
            or store is None
        ):
            await self.app(scope, receive, send)
            return
        if not 1 <= len(key) <= MAX_KEY_LENGTH:
            err = invalid(
                f"Invalid 'Idempotency-Key': expected 1 to {MAX_KEY_LENGTH} characters, got "
                f"{len(key)}.",
                "Idempotency-Key",
            )
            await send_error(err, scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:  # the client went away mid-body: nothing to claim, run or store
            return
        endpoint = _digest(scope["method"].encode(), scope["path"].encode(), key.encode())
        record_key = f"{principal.tenant}.{endpoint}"
        fingerprint = _digest(scope.get("query_string", b""), body)
        try:
            outcome = await _claim_or_wait(store, record_key, fingerprint)
        except NATS_DOWN:
            err = unavailable("The event store is unreachable; retry shortly.")
            await send_error(err, scope, receive, send)
            return
        if isinstance(outcome, APIError):
            await send_error(outcome, scope, receive, send)
        elif isinstance(outcome, dict):
            status, headers, data = replay_response(outcome)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": data})
        else:
            await self._run(outcome, scope, replay(body, receive), send)

    async def _run(self, claim: Claim, scope: Scope, receive: Receive, send: Send) -> None:
        heartbeat = asyncio.create_task(claim.keep_alive())
        capture = Capture(send)
        try:
            await self.app(scope, receive, capture)
        except BaseException:
            await cancel_for_sure(heartbeat)
            await claim.release()
            raise
        await cancel_for_sure(heartbeat)  # ended before the final record is written
        await claim.finish(capture)
        await capture.flush()


async def _claim_or_wait(
    store: IdempotencyStore, key: str, fingerprint: str
) -> Claim | dict[str, Any] | APIError:
    """Our claim on the key, the finished record to replay, or the error to answer."""
    token = secrets.token_hex(8)
    deadline = time.monotonic() + WAIT
    delay = 0.005
    while True:
        if time.monotonic() >= deadline:
            return _in_progress()
        try:
            revision = await store.kv.create(key, Claim.pending(fingerprint, token))
            return Claim(store, key, fingerprint, revision, token)
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await store.kv.get(key)
        except KeyNotFoundError:  # released (or expired) meanwhile: claim it again
            continue
        record = json.loads(entry.value or b"{}")
        if record.get("fingerprint") != fingerprint:
            return _mismatch()
        if record.get("state") == "done":
            if record.get("streamed") or record.get("too_large"):
                return _not_replayable(record)
            return record
        if time.time() - float(record.get("beat", 0)) > LEASE:
            with contextlib.suppress(KeyWrongLastSequenceError):
                revision = await store.kv.update(
                    key, Claim.pending(fingerprint, token), last=entry.revision
                )
                return Claim(store, key, fingerprint, revision, token)
            continue
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
