"""Append to and read from the event stream.

The only code that writes events. Every command becomes one append: a single
publish, or an atomic batch (JetStream 2.12+) when it produces several events,
guarded by the conversation's last sequence (optimistic concurrency) and an
idempotency key per event (`Nats-Msg-Id`, the event id).
"""

import asyncio
import json
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig
from nats.js.errors import APIError, NotFoundError

from events.chain import GENESIS, seal
from events.direct import DirectGetUnavailable, DirectMsg, direct_get, publish_acked, replies
from events.ids import new_id
from events.schema import ConversationCreated, Event, EventBase, decode
from events.subjects import (
    ALL_EVENTS,
    STREAM_NAME,
    STREAM_SUBJECTS,
    conversation_filter,
    conversation_subject,
)
from events.turns import Turns

# JetStream's "wrong last sequence": 10071 from a single server, 10164 (the constant
# form) from a clustered stream's leader.
WRONG_LAST_SEQUENCE = (10071, 10164)
MAX_BATCH = 1000
# Every appended message names its conversation's tenant, so the head read that every
# command and read does anyway also says who owns the conversation (no extra request).
TENANT_HEADER = "Convstore-Tenant"
# Every message appended to a conversation after it was deleted (a running response's
# outcome) says so, so that the head read still finds the conversation gone.
DELETED_HEADER = "Convstore-Conversation-Deleted"
# The events that end a conversation: after them it is gone, whatever its head is.
ENDING = frozenset({"ConversationDeleted", "ConversationPurged"})

T = TypeVar("T")


class StoreUnavailable(Exception):
    """NATS cannot be reached or did not answer in time."""


class ConcurrencyConflict(Exception):
    """Someone appended to the conversation since its head was read."""


class EventTooLarge(Exception):
    """An event does not fit in one NATS message."""


@dataclass(frozen=True, slots=True)  # slots: a process remembers 10,000 heads
class Head:
    """The last event of a conversation: where its history ends right now."""

    seq: int
    event_id: str
    event_type: str
    hash: str
    # The owning tenant, from the `Convstore-Tenant` header; None when the message has no
    # such header (written before tenants existed, or by something else than this store).
    tenant: str | None = None
    # Read from the log only (never in the heads a process remembers): the event's bytes,
    # and the conversation's sequence before it when its message says so (an event
    # appended alone carries its guard, `Nats-Expected-Last-Subject-Sequence`). A view at
    # exactly `prev_seq` then needs only this event folded to reach the head.
    data: bytes = field(default=b"", repr=False, compare=False)
    prev_seq: int | None = None
    # Appended after the conversation was deleted (DELETED_HEADER).
    after_delete: bool = False

    @property
    def gone(self) -> bool:
        """The conversation was deleted or erased at or before this event."""
        return self.after_delete or self.event_type in ENDING


# A head handed from the process that appended it to one that will append next (the model
# worker's outcome, to the API replica relaying the response): "<seq> <event id> <event
# type> <hash> [<tenant>]". Ids, type names, hashes and tenant names hold no spaces.
HEAD_HEADER = "Convstore-Thread-Head"


def head_header(head: Head) -> str:
    return " ".join(
        [str(head.seq), head.event_id, head.event_type, head.hash, head.tenant or ""]
    ).rstrip()


def parse_head_header(value: str) -> Head | None:
    """The head `head_header` wrote; None for anything else (it is only ever a hint)."""
    parts = value.split(" ")
    if len(parts) not in (4, 5) or not parts[0].isdigit() or not all(parts[1:4]):
        return None
    tenant = parts[4] if len(parts) == 5 and parts[4] else None
    return Head(int(parts[0]), parts[1], sys.intern(parts[2]), parts[3], _interned(tenant))


def _interned(value: str | None) -> str | None:
    """One copy of a tenant name among the heads a process remembers, not one per head."""
    return sys.intern(value) if value is not None else None


async def ensure_stream(
    js: JetStreamContext, replicas: int = 1, duplicate_window: float = 120.0
) -> None:
    """Create the event stream, or bring an existing one's settings up to date."""
    config = StreamConfig(
        name=STREAM_NAME,
        subjects=STREAM_SUBJECTS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=duplicate_window,
        allow_direct=True,
        allow_atomic=True,
    )

    async def ensure() -> None:
        try:
            await js.stream_info(STREAM_NAME)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)

    await while_unavailable(ensure)


async def while_unavailable(call: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """Call again while JetStream does not answer, for at most `timeout` seconds: on a
    cluster, a stream being created or electing a leader answers nothing (or 503) for
    a few seconds, and a process starting then should wait, not exit."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except Exception as exc:
            if not _unavailable(exc) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


UNAVAILABLE = (
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.OutboundBufferLimitError,
    # The stream has no leader right now (a cluster electing one): no responders to a
    # JetStream publish, or a 503 from the JetStream API.
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
)
# How long an append whose answer timed out is looked for in the log (`_stored`).
SETTLE = 2.0


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE)


def _timeout(exc: BaseException) -> bool:
    """No answer in time: the append may have been stored (unlike a refusal)."""
    return isinstance(exc, asyncio.TimeoutError | nats.errors.TimeoutError)


class EventStore:
    """Appends and reads one conversation's events on the shared stream."""

    def __init__(
        self, nc: NATS, js: JetStreamContext, timeout: float = 5.0, heads: int = 10_000
    ) -> None:
        self.nc = nc
        self.js = js
        self.timeout = timeout
        # The heads this process appended last, per conversation (LRU): a command may
        # decide on one instead of reading the head, since the append's expected-sequence
        # guard refuses it if anyone appended since. Never used by reads.
        self._heads: OrderedDict[str, Head] = OrderedDict()
        self._heads_max = heads
        # Commands on one conversation from this process run one at a time (events/turns.py).
        self.turns = Turns()

    def appended_head(self, conversation_id: str) -> Head | None:
        """The head this process left after its own last append to the conversation (it
        may be stale: only an append guarded by its sequence may rely on it)."""
        return self._heads.get(conversation_id)

    def learn_head(self, conversation_id: str, head: Head) -> None:
        """Remember a head another process appended (see HEAD_HEADER), unless this process
        already knows a later one. Only a guarded append relies on it, as on our own."""
        known = self._heads.get(conversation_id)
        if known is None or known.seq < head.seq:
            self._remember(conversation_id, head)

    def forget_head(self, conversation_id: str) -> None:
        self._heads.pop(conversation_id, None)

    def _remember(self, conversation_id: str, head: Head) -> None:
        self._heads[conversation_id] = head
        self._heads.move_to_end(conversation_id)
        if len(self._heads) > self._heads_max:
            self._heads.popitem(last=False)

    async def head(self, conversation_id: str) -> Head | None:
        """The conversation's last event, read straight from the log (one direct get)."""
        msg = await self._last(conversation_filter(conversation_id))
        if msg is None:
            return None
        headers = msg.headers or {}
        if "Convstore-Event-Type" in headers and "Convstore-Hash" in headers:
            prev = headers.get("Nats-Expected-Last-Subject-Sequence")
            alone = "Nats-Batch-Id" not in headers
            return Head(
                msg.seq,
                headers.get("Nats-Msg-Id", ""),
                sys.intern(headers["Convstore-Event-Type"]),
                headers["Convstore-Hash"],
                _interned(headers.get(TENANT_HEADER)),
                msg.data,
                int(prev) if alone and prev and prev.isdigit() else None,
                DELETED_HEADER in headers,
            )
        # Written by something else than this store: read what it says, leniently (an
        # event type this version does not know must not break reads of the conversation).
        try:
            body = json.loads(msg.data or b"{}")
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        return Head(
            msg.seq,
            str(body.get("id", "")),
            str(body.get("type", "")),
            str(body.get("hash", "")),
        )

    async def last_event(self, conversation_id: str) -> Event | None:
        msg = await self._last(conversation_filter(conversation_id))
        return decode(msg.data, msg.seq) if msg is not None else None

    async def creation(self, conversation_id: str) -> ConversationCreated | None:
        """The event that created a conversation (one per conversation, so the last one)."""
        subject = conversation_subject(conversation_id, "ConversationCreated")
        msg = await self._last(subject)
        if msg is None:
            return None
        event = decode(msg.data, msg.seq)
        return event if isinstance(event, ConversationCreated) else None

    async def last_seq(self) -> int:
        """The sequence of the newest event of any conversation (0 for an empty log)."""
        msg = await self._last(ALL_EVENTS)
        return msg.seq if msg is not None else 0

    def check_connected(self) -> None:
        """Fail fast while disconnected instead of waiting for a request to time out."""
        if not self.nc.is_connected:
            raise StoreUnavailable("not connected to NATS")

    async def _last(self, subject: str) -> DirectMsg | None:
        """The newest message on `subject` (a filter), by one direct get."""
        self.check_connected()
        try:
            return await direct_get(self.nc, STREAM_NAME, {"last_by_subj": subject}, self.timeout)
        except DirectGetUnavailable as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def append(
        self,
        events: list[EventBase],
        expected_last_seq: int,
        prev_hash: str = GENESIS,
        tenant: str | None = None,
        deleted: bool = False,
    ) -> int:
        """Append `events` of one conversation atomically; return the last sequence.

        `expected_last_seq` is the conversation's head sequence the command was
        decided on (0 for a new conversation), `prev_hash` that head's hash: each
        event is sealed into the conversation's hash chain. `tenant` (the head's, or the
        ConversationCreated's own) goes into every message's `Convstore-Tenant` header;
        `deleted` (the head's `gone`) marks every message as appended after the
        conversation was deleted (DELETED_HEADER), so that it stays gone.
        The events of a batch all get its latest event's `time`, so that no `as_of` time
        shows half of it. Raises ConcurrencyConflict when the conversation moved on,
        StoreUnavailable when NATS does not answer.
        """
        if not events or len(events) > MAX_BATCH:
            raise ValueError(f"a batch holds 1..{MAX_BATCH} events")
        conversation_id = events[0].conversation_id
        if len(events) > 1:  # one command, one moment: a time never splits a batch (as_of)
            when = max(e.time for e in events)
            events = [e if e.time == when else e.model_copy(update={"time": when}) for e in events]
        sealed: list[EventBase] = []
        payloads: list[bytes] = []
        for event in events:
            event, payload = seal(event, prev_hash)
            prev_hash = event.hash
            sealed.append(event)
            payloads.append(payload)
        events = sealed
        if isinstance(events[0], ConversationCreated):
            tenant = events[0].tenant
        limit = self.nc.max_payload - 1024
        if any(len(p) > limit for p in payloads):
            raise EventTooLarge(f"an event exceeds {limit} bytes")
        self.check_connected()
        guard = {
            "Nats-Expected-Last-Subject-Sequence": str(expected_last_seq),
            "Nats-Expected-Last-Subject-Sequence-Subject": conversation_filter(conversation_id),
        }
        marks = {TENANT_HEADER: tenant} if tenant is not None else {}
        if deleted:
            marks[DELETED_HEADER] = "1"
        try:
            if len(events) == 1:
                seq = await self._acked(
                    conversation_subject(conversation_id, events[0].type),
                    payloads[0],
                    {**self._headers(events[0]), **marks, **guard},
                )
            else:
                seq = await self._append_batch(events, payloads, guard, marks)
        except APIError as exc:
            if exc.err_code in WRONG_LAST_SEQUENCE:
                raise ConcurrencyConflict(exc.description or "wrong last sequence") from exc
            if _unavailable(exc):
                raise StoreUnavailable(exc.description or type(exc).__name__) from exc
            raise
        except Exception as exc:
            if not _unavailable(exc):
                raise
            stored = await self._stored(events, expected_last_seq) if _timeout(exc) else None
            if stored is None:
                raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
            seq = stored
        last = events[-1]
        head = Head(seq, last.id, last.type, last.hash, tenant, after_delete=deleted)
        self._remember(conversation_id, head)
        return seq

    async def _stored(self, events: list[EventBase], expected_last_seq: int) -> int | None:
        """After an append whose answer did not come in time: its last sequence if it was
        stored after all (a busy server answers late), so the client is not told it failed;
        ConcurrencyConflict when another event took its place (the guard refuses it now,
        so it never will be); None when neither shows within the settle time or NATS does
        not answer (then nobody can say, and the caller answers 503)."""
        subject = conversation_filter(events[0].conversation_id)
        wait = max(self.timeout, SETTLE)
        deadline = time.monotonic() + wait
        try:
            seq = expected_last_seq
            for n, event in enumerate(events):
                request = {"seq": seq + 1, "next_by_subj": subject}
                self.check_connected()  # away: no way to know, and no time to wait for it
                while (msg := await direct_get(self.nc, STREAM_NAME, request, wait)) is None:
                    if n or time.monotonic() > deadline:  # a batch is stored whole
                        return None
                    await asyncio.sleep(0.05)
                if msg.headers.get("Nats-Msg-Id") != event.id:
                    if n:
                        return None  # not ours after all: cannot be, say nothing
                    raise ConcurrencyConflict("another event took the appended one's place")
                seq = msg.seq
            return seq
        except (StoreUnavailable, DirectGetUnavailable, *UNAVAILABLE):
            return None

    async def _append_batch(
        self,
        events: list[EventBase],
        payloads: list[bytes],
        guard: dict[str, str],
        marks: dict[str, str],
    ) -> int:
        """JetStream atomic batch: all messages are stored at the commit, or none.
        `guard` goes on the first message, `marks` on every one."""
        batch_id = new_id("batch")
        conversation_id = events[0].conversation_id
        last = len(events)
        for n, (event, payload) in enumerate(zip(events, payloads, strict=True), start=1):
            headers = {
                **self._headers(event),
                "Nats-Batch-Id": batch_id,
                "Nats-Batch-Sequence": str(n),
            }
            headers.update(marks)
            if n == 1:
                headers.update(guard)
            subject = conversation_subject(conversation_id, event.type)
            if n < last:
                await self.nc.publish(subject, payload, headers=headers)
            else:
                headers["Nats-Batch-Commit"] = "1"
                return await self._acked(subject, payload, headers)
        raise AssertionError("unreachable")

    async def _acked(self, subject: str, payload: bytes, headers: dict[str, str]) -> int:
        """Publish and wait for the stored sequence. Through the connection's shared reply
        inbox: nats-py's `js.publish` (a random token and a wait_for task per call) cost
        about as much CPU as the rest of an append on the API's side."""
        headers = {**headers, "Nats-Expected-Stream": STREAM_NAME}  # as js.publish(stream=)
        acked = await publish_acked(await replies(self.nc), subject, payload, headers)
        try:
            async with asyncio.timeout(self.timeout):
                return await acked
        finally:
            acked.cancel()

    @staticmethod
    def _headers(event: EventBase) -> dict[str, str]:
        return {
            "Nats-Msg-Id": event.id,
            "Convstore-Event-Type": event.type,
            "Convstore-Hash": event.hash,
        }
