"""A response's streaming events (OpenAI's SSE events) on NATS, for any replica to serve.

The model worker writes each event, numbered by `sequence_number`, to the subject
`rstream.<response_id>` of a stream of its own; an API replica follows that subject
with an ordered consumer, from the start, so a late or resumed client
(`starting_after`) gets every event it missed. The facts (request, output, terminal
status) are in the event log; this stream is the delta-by-delta presentation of them,
so it is kept in memory (replicated in a cluster, but not fsynced: with
`sync_interval: always` a file stream would fsync every delta) and expires after
`max_age` or beyond `max_bytes`. After a restart of a single node a finished response's
stream holds only how it ended (re-published by a worker, or synthesised by the API):
`response.created`, which opens every stream (`opening`), and its final event.
"""

import asyncio
import contextlib
import re
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, NotFoundError

from events import codec
from events.store import HEAD_HEADER, Head, head_header, parse_head_header, while_unavailable
from events.subjects import (
    RESPONSE_STREAM_NAME,
    RESPONSE_STREAM_SUBJECTS,
    response_stream_subject,
)

TERMINAL_TYPES = frozenset(
    {
        "response.completed",
        "response.failed",
        "response.incomplete",
        "response.cancelled",
        "error",
    }
)
DELTA_TYPES = frozenset({"response.output_text.delta", "response.function_call_arguments.delta"})
FLUSH_EVERY = 0.002  # seconds: a burst of deltas is written out at least this often
STREAM_NAME_IN_USE = 10058
DEFAULT_MAX_AGE = 24 * 3600.0
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


async def ensure_response_stream(
    js: JetStreamContext,
    replicas: int = 1,
    max_age: float = DEFAULT_MAX_AGE,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> None:
    """Create or update the stream (waiting out a cluster that is electing a leader)."""
    await while_unavailable(lambda: _ensure(js, replicas, max_age, max_bytes))


async def _ensure(js: JetStreamContext, replicas: int, max_age: float, max_bytes: int) -> None:
    config = StreamConfig(
        name=RESPONSE_STREAM_NAME,
        subjects=RESPONSE_STREAM_SUBJECTS,
        storage=StorageType.MEMORY,
        num_replicas=replicas,
        max_age=max_age,
        max_bytes=max_bytes,
        discard=DiscardPolicy.OLD,
        allow_direct=True,
    )
    try:
        info = await js.stream_info(RESPONSE_STREAM_NAME)
    except NotFoundError:
        info = None
    if info is not None and info.config.storage != StorageType.MEMORY:
        # Made by an earlier build as a file stream: storage cannot be updated in place.
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(RESPONSE_STREAM_NAME)
        info = None
    if info is None:
        try:
            await js.add_stream(config)
            return
        except APIError as exc:  # another process created it meanwhile
            if exc.err_code != STREAM_NAME_IN_USE:
                raise
    await js.update_stream(config)


def opening(final: dict[str, Any]) -> dict[str, Any]:
    """The response as a stream's `response.created` shows it, made from its final form,
    for a stream that would otherwise begin with its final event (a response failed
    before a worker started it, or one whose streaming events expired): the OpenAI SDK's
    stream helper refuses a stream that does not open with `response.created`."""
    return {
        **final,
        "status": "queued" if final.get("background") else "in_progress",
        "completed_at": None,
        "error": None,
        "incomplete_details": None,
        "output": [],
        "usage": None,
    }


async def last_event(js: JetStreamContext, response_id: str) -> dict[str, Any] | None:
    """The newest streaming event of a response, or None when none was written (or kept)."""
    try:
        msg = await js.get_last_msg(
            RESPONSE_STREAM_NAME, response_stream_subject(response_id), direct=True
        )
    except NotFoundError:
        return None
    return codec.loads(msg.data or b"{}")  # type: ignore[no-any-return]


async def end_untaken(
    nc: NATS, js: JetStreamContext, response_id: str, queued: dict[str, Any], final: dict[str, Any]
) -> None:
    """End the stream of a response no worker took (cancelled or failed while queued): its
    `response.created` first when nothing was published yet (a stream must open with it:
    the OpenAI SDK's stream helper refuses anything else), then the final event, unless
    one is there already (a worker that found the response finished wrote it)."""
    last = await last_event(js, response_id)
    if last is not None and last.get("type") in TERMINAL_TYPES:
        return
    writer = StreamWriter(nc, js, response_id, (last or {}).get("sequence_number", -1) + 1)
    if last is None:  # opened here with the response as it was queued, which the
        # writer's own opening (guessed from the final form) would only approximate
        await writer.emit("response.created", response=queued)
    await writer.emit(f"response.{final['status']}", response=final)


class StreamWriter:
    """Numbers and publishes one response's streaming events, in order.

    Deltas go out without waiting for JetStream's ack (one connection keeps them in
    order); the terminal event waits for its ack, which covers everything before it.
    nats-py only queues a publish for its flusher task, so chunks produced without an
    await in between (echo, or several chunks parsed from one upstream read) would all
    wait in its buffer until the worker next waits for I/O, the first delta behind the
    last. So after a delta the writer yields to the event loop (which writes the buffer
    out), at most once per FLUSH_EVERY: the first delta leaves at once, together with the
    events before it, and a burst still goes out in a few writes instead of one per event
    (each write wakes nats-server and the API; one per event costs more CPU than it saves).

    A `held` writer numbers its events but keeps them until `release()`: the model
    worker calls the model while its claim is being appended, and nothing may be
    published before the claim is stored (a claim lost to another worker publishes
    nothing). It keeps one delta: a second one waits for the release. A fast stream (echo
    answers fifty deltas without a pause) would otherwise run on the worker's event loop
    ahead of the claim's acknowledgement, holding back the very first delta, for output
    that a lost claim throws away.
    """

    def __init__(
        self, nc: NATS, js: JetStreamContext, response_id: str, next_seq: int, held: bool = False
    ) -> None:
        self.nc = nc
        self.js = js
        self.subject = response_stream_subject(response_id)
        self.next_seq = next_seq
        self.emitted: list[str] = []
        self._held: list[tuple[str, bytes]] | None = [] if held else None
        self._released = asyncio.Event()
        self._held_delta = False
        self._flushed = -FLUSH_EVERY  # when it last yielded to the flusher
        # The conversation's head after the outcome this writer's worker appended, sent
        # with the terminal event (HEAD_HEADER): the replica relaying it can append the next
        # request without reading the head first.
        self.thread_head: Head | None = None

    async def emit(self, type: str, **fields: Any) -> dict[str, Any]:
        if self.next_seq == 0 and type in TERMINAL_TYPES and "response" in fields:
            await self.emit("response.created", response=opening(fields["response"]))
        if self._held is not None and type in DELTA_TYPES:
            if self._held_delta:
                await self._released.wait()
            self._held_delta = True
        event = {"type": type, "sequence_number": self.next_seq, **fields}
        self.next_seq += 1
        self.emitted.append(type)
        data = codec.dumps(event)
        if self._held is not None:
            self._held.append((type, data))
        else:
            await self._publish(type, data)
        return event

    async def release(self) -> None:
        """Publish the held events in order; from then on every event at once."""
        while self._held:  # events emitted meanwhile join the queue, in order
            type, data = self._held.pop(0)
            await self._publish(type, data)
        self._held = None
        self._released.set()  # a second delta waiting goes out now, after them

    async def _publish(self, type: str, data: bytes) -> None:
        if type in TERMINAL_TYPES:
            headers = {HEAD_HEADER: head_header(self.thread_head)} if self.thread_head else None
            await self.js.publish(self.subject, data, stream=RESPONSE_STREAM_NAME, headers=headers)
        else:
            await self.nc.publish(self.subject, data)
            now = time.monotonic()
            if type in DELTA_TYPES and now - self._flushed >= FLUSH_EVERY:
                self._flushed = now
                await asyncio.sleep(0)  # the flusher writes it (and what came before) now


@dataclass(frozen=True, slots=True)
class Frame:
    """One streaming event as it was published: its type and number, and its JSON bytes,
    which a relay forwards as the SSE `data:` without decoding and encoding it again."""

    type: str
    number: int
    data: bytes

    @classmethod
    def of(cls, data: bytes) -> "Frame":
        """StreamWriter writes compact JSON that begins with the type and the number: read
        those two from the front. Anything else is decoded (and re-encoded on one line)."""
        head = _HEAD.match(data)
        if head is not None and b"\n" not in data and b"\r" not in data:
            return cls(head[1].decode(), int(head[2]), data)
        event = codec.loads(data)
        compact = codec.dumps(event)
        return cls(str(event.get("type", "")), int(event.get("sequence_number", 0)), compact)

    def event(self) -> dict[str, Any]:
        return codec.loads(self.data)  # type: ignore[no-any-return]

    def sse(self) -> bytes:
        return b"event: %s\ndata: %s\n\n" % (self.type.encode(), self.data)


_HEAD = re.compile(rb'\{"type":"([^"\\]+)","sequence_number":(\d+)[,}]')


async def follow_frames(
    js: JetStreamContext, response_id: str, starting_after: int | None = None
) -> AsyncIterator[Frame]:
    """A response's streaming events from the first (or after `starting_after`) until its
    terminal event; waits for events not written yet."""
    sub = await js.subscribe(
        response_stream_subject(response_id),
        ordered_consumer=True,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
        stream=RESPONSE_STREAM_NAME,
    )
    last = -1 if starting_after is None else starting_after
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=None)
            except TimeoutError:  # pragma: no cover - timeout=None waits
                continue
            frame = Frame.of(msg.data)
            # A number seen already is skipped: two enders of a response nobody took (the
            # API's cancel and a worker) can each open its stream, interleaved.
            if frame.number > last:
                last = frame.number
                yield frame
            if frame.type in TERMINAL_TYPES:
                return
    finally:
        await sub.unsubscribe()


class LiveEvents:
    """A response's events as they are published, for the client that asked for it.

    Subscribed on core NATS before the request is appended, so nothing is missed and no
    consumer is created per request. A gap (the subscription fell behind and lost
    messages) or a long silence is checked against the stream, and the rest is read from
    there (`follow_frames`). Events come in batches of whatever arrived meanwhile, so a
    relay writes a burst of deltas to its client at once, not one write per event.
    """

    CHECK_AFTER = 5.0  # seconds of silence before asking the stream what it has

    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        response_id: str,
        on_head: Callable[[Head], None] | None = None,
    ) -> None:
        self.nc = nc
        self.js = js
        self.response_id = response_id
        self.on_head = on_head  # called with the thread head a terminal event carries
        self._sub: Any = None
        self._arrived: deque[bytes] = deque()
        self._signal = asyncio.Event()

    async def start(self) -> None:
        async def arrived(msg: Msg) -> None:
            # A callback rather than next_msg(timeout): no task and timer per event.
            self._arrived.append(msg.data)
            self._signal.set()
            if msg.headers and self.on_head is not None:  # only a terminal event has any
                value = msg.headers.get(HEAD_HEADER)
                head = parse_head_header(value) if value else None
                if head is not None:
                    self.on_head(head)

        self._sub = await self.nc.subscribe(response_stream_subject(self.response_id), cb=arrived)

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None

    async def frames(self) -> AsyncGenerator[list[Frame], None]:
        """Batches of events in order, from the first to the terminal one."""
        expected = 0
        try:
            while True:
                if not self._arrived:
                    self._signal.clear()
                    try:
                        async with asyncio.timeout(self.CHECK_AFTER):
                            await self._signal.wait()
                    except TimeoutError:
                        last = await last_event(self.js, self.response_id)
                        if last is None or last.get("sequence_number", -1) < expected:
                            continue  # nothing missed: still queued or thinking
                        break  # published while we were not listening: read the stream
                batch: list[Frame] = []
                gap = False
                while self._arrived:
                    frame = Frame.of(self._arrived.popleft())
                    if frame.number < expected:
                        continue
                    if frame.number > expected:
                        gap = True  # lost messages: read the stream from the gap on
                        break
                    batch.append(frame)
                    expected += 1
                    if frame.type in TERMINAL_TYPES:
                        yield batch
                        return
                if batch:
                    yield batch
                if gap:
                    break
        finally:
            await self.close()
        async for frame in follow_frames(self.js, self.response_id, expected - 1):
            yield [frame]
