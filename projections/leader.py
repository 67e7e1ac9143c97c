"""One active projector at a time: a lease in the meta KV bucket.

The fold caches views and each generation has one durable push consumer, so two
projectors writing the same views at once could write stale state. Several may run
(for failover); they elect one leader. The lease is one key of `convstore_meta`,
taken with `create` and renewed with revision-checked `update`: whoever writes a
revision the others did not expect fails, so at most one process holds each revision.

Nothing expires on the server and no clocks are compared across processes. A standby
takes over (with a revision-checked update, so one standby wins) once it has seen
the same revision for `ttl` seconds by its own clock. A leader that has not renewed
for `ttl - margin` seconds, counted from before its last successful renewal was sent,
stops writing first. A leader frozen for longer than `margin` (SIGSTOP, a stalled VM)
can still overlap with its successor; a clean stop deletes the key for an instant
hand-over.
"""

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import time

from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

log = logging.getLogger("convstore.leader")

LEASE_KEY = "projector.leader"
LEASE_TTL = 5.0  # seconds a standby waits on an unchanged lease before taking over


def holder_id() -> str:
    """Names this process in the lease (host and pid, for operators and tests)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Lease:
    """The projector lease: `acquire` waits for it, `keep` renews it until it is lost."""

    def __init__(
        self, kv: KeyValue, holder: str, ttl: float = LEASE_TTL, key: str = LEASE_KEY
    ) -> None:
        self.kv = kv
        self.holder = holder
        self.ttl = ttl
        self.key = key
        self.renew_every = ttl / 5
        self.margin = ttl * 0.3
        self.revision: int | None = None
        self.renewed_at = 0.0  # monotonic time just before the last good renewal was sent

    def _value(self) -> bytes:
        return json.dumps({"holder": self.holder, "pid": os.getpid()}).encode()

    async def _current(self) -> tuple[int, str] | None:
        """(revision, holder) of the lease, or None when nobody holds it."""
        try:
            entry = await self.kv.get(self.key)
        except KeyNotFoundError:  # never written, or deleted by a clean stop
            return None
        try:
            holder = str(json.loads(entry.value or b"{}").get("holder", ""))
        except (ValueError, AttributeError):
            holder = ""
        return entry.revision or 0, holder

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this process holds the lease (True), or until `stop` (False)."""
        observed: int | None = None  # the revision of someone else's lease we are timing
        since = 0.0
        announced = False
        while not stop.is_set():
            sent = time.monotonic()
            try:
                current = await self._current()
                now = time.monotonic()
                if current is None:
                    self.revision = await self.kv.create(self.key, self._value())
                elif current[1] == self.holder or (
                    current[0] == observed and now - since >= self.ttl
                ):
                    self.revision = await self.kv.update(self.key, self._value(), last=current[0])
                else:
                    if current[0] != observed:
                        observed, since = current[0], now
                    if not announced:
                        log.info("standing by: the projector lease is held by %s", current[1])
                        announced = True
                    await _sleep_unless(stop, self.ttl / 10)
                    continue
            except KeyWrongLastSequenceError:
                continue  # another process wrote it first: look again
            except Exception as exc:  # NATS away or slow: keep trying
                log.debug("lease not acquired: %s", exc or type(exc).__name__)
                await _sleep_unless(stop, self.ttl / 10)
                continue
            self.renewed_at = sent
            return True
        return False

    async def keep(self) -> None:
        """Renew the lease; return as soon as it is lost or cannot be renewed in time."""
        while True:
            deadline = self.renewed_at + self.ttl - self.margin
            await asyncio.sleep(max(0.0, min(self.renew_every, deadline - time.monotonic())))
            sent = time.monotonic()
            if sent >= deadline:
                log.warning("could not renew the projector lease in time; stepping down")
                return
            try:
                self.revision = await asyncio.wait_for(
                    self.kv.update(self.key, self._value(), last=self.revision), deadline - sent
                )
                self.renewed_at = sent
            except KeyWrongLastSequenceError:
                log.warning("the projector lease was taken over; stepping down")
                return
            except Exception as exc:  # try again until the deadline
                log.debug("lease renewal failed: %s", exc or type(exc).__name__)

    async def release(self) -> None:
        """On a clean stop: delete the lease if still ours, so a standby starts at once."""
        if self.revision is None:
            return
        revision, self.revision = self.revision, None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.kv.delete(self.key, last=revision), self.ttl / 2)


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
