"""JetStream batched direct get: many messages in one request (nats-server 2.11+).

One request answers a whole page of the log, or the newest message of up to 1024
subjects (`multi_last`), e.g. twenty KV keys: one round trip instead of one per key.
Its replies, and those of other requests we route ourselves (the projector's
acknowledged view writes), come in on one shared inbox per connection (`replies`).
"""

import asyncio
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import APIError, NoStreamResponseError

from events import codec


class DirectGetUnavailable(Exception):
    """NATS is unreachable, or the batch did not arrive in time."""


class TooManySubjects(Exception):
    """A multi_last request matched more subjects than one request may (1024)."""


@dataclass(frozen=True)
class DirectMsg:
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]


class Batch(list[DirectMsg]):
    """The messages of one batched direct get; `pending`: how many more matched (the
    end-of-batch status's Nats-Num-Pending), 0 when the batch holds them all."""

    pending: int = 0


class _Batch:
    """Collects one batch's messages until its end-of-batch status."""

    def __init__(self) -> None:
        self.out = Batch()
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def add(self, msg: Msg) -> None:
        if self.done.done():
            return
        headers = msg.headers or {}
        status = headers.get("Status")
        if status in ("204", "404"):  # end of batch; nothing found
            self.out.pending = int(headers.get("Nats-Num-Pending") or 0)
            self.done.set_result(None)
        elif status == "413":
            self.done.set_exception(TooManySubjects(headers.get("Description", "")))
        elif status:
            self.done.set_exception(
                DirectGetUnavailable(
                    f"direct get answered {status} {headers.get('Description', '')}"
                )
            )
        else:
            self.out.append(
                DirectMsg(int(headers["Nats-Sequence"]), headers["Nats-Subject"], msg.data, headers)
            )


class Replies:
    """One wildcard inbox subscription per connection, shared by every request whose
    replies it routes (batched direct gets, acknowledged publishes): a request then costs
    one publish, not a SUB, a publish and an UNSUB (each its own write), and nats-py's
    per-request future, timer and random token."""

    def __init__(self, nc: NATS) -> None:
        self.nc = nc
        self.prefix = nc.new_inbox()
        self.handlers: dict[str, Callable[[Msg], None]] = {}
        self.subscribed: asyncio.Task[None] | None = None
        self.next = 0

    async def ready(self) -> None:
        task = self.subscribed
        if task is not None and task.done() and not task.cancelled() and not task.exception():
            return  # subscribed: the common case costs no shield and no future
        if task is None or task.done():  # not started yet, or it failed: (again)
            self.subscribed = asyncio.ensure_future(self._subscribe())
        await asyncio.shield(self.subscribed)

    async def _subscribe(self) -> None:
        # A callback, not next_msg(): no task and timer per message of a batch.
        await self.nc.subscribe(f"{self.prefix}.*", cb=self._route)

    async def _route(self, msg: Msg) -> None:
        handler = self.handlers.get(msg.subject[len(self.prefix) + 1 :])
        if handler is not None:
            handler(msg)

    def open(self, handler: Callable[[Msg], None]) -> tuple[str, str]:
        """A reply subject whose messages go to `handler` until `close(token)`."""
        self.next += 1
        token = str(self.next)
        self.handlers[token] = handler
        return f"{self.prefix}.{token}", token

    def close(self, token: str) -> None:
        self.handlers.pop(token, None)


_replies: "weakref.WeakKeyDictionary[NATS, Replies]" = weakref.WeakKeyDictionary()


async def replies(nc: NATS) -> Replies:
    """The connection's shared reply inbox, subscribed."""
    inbox = _replies.get(nc)
    if inbox is None:
        inbox = _replies[nc] = Replies(nc)
    await inbox.ready()
    return inbox


async def direct_batch(nc: NATS, stream: str, request: dict[str, Any], timeout: float) -> Batch:
    """The messages of one batched direct get, until its end-of-batch status. A
    multi_last request is one point-in-time read of all its subjects (ADR-31)."""
    batch = _Batch()
    await _direct(nc, stream, request, batch.add, batch.done, timeout)
    return batch.out


async def direct_get(
    nc: NATS, stream: str, request: dict[str, Any], timeout: float
) -> DirectMsg | None:
    """The one message a plain direct get names (e.g. `{"last_by_subj": ...}`), None when
    there is none."""
    answer: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

    def got(msg: Msg) -> None:
        if not answer.done():
            answer.set_result(msg)

    await _direct(nc, stream, request, got, answer, timeout)
    msg = answer.result()
    headers = msg.headers or {}
    status = headers.get("Status")
    if status == "404":
        return None
    if status:
        raise DirectGetUnavailable(f"direct get answered {status} {headers.get('Description', '')}")
    return DirectMsg(int(headers["Nats-Sequence"]), headers["Nats-Subject"], msg.data, headers)


async def _direct(
    nc: NATS,
    stream: str,
    request: dict[str, Any],
    on_reply: Callable[[Msg], None],
    done: "asyncio.Future[Any]",
    timeout: float,
) -> None:
    """Send a direct get whose replies go to `on_reply` until `done`, through the shared
    inbox: nats-py's own request (a random token, a future in its map and a wait_for task
    per call) cost more than the server's work."""
    if not nc.is_connected:
        raise DirectGetUnavailable("not connected to NATS")
    inbox = await replies(nc)
    reply, token = inbox.open(on_reply)
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", codec.dumps(request), reply=reply)
        await _within(done, timeout)
    finally:
        inbox.close(token)


T = TypeVar("T")


async def _within(answer: "asyncio.Future[T]", timeout: float) -> T:
    """`answer`, or DirectGetUnavailable after `timeout` seconds: a timer, where
    asyncio.wait_for (Python 3.11) starts a task per call."""

    def expire() -> None:
        if not answer.done():
            answer.set_exception(DirectGetUnavailable("direct get timed out"))

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        return await answer
    finally:
        timer.cancel()


async def publish_acked(
    inbox: Replies, subject: str, payload: bytes, headers: dict[str, str]
) -> "asyncio.Future[int]":
    """A JetStream publish whose acknowledgement comes back to `inbox` (its connection's
    shared one, fetched once per write, not per message) and is awaited later: sent once
    this returns (so calls go out in call order); the future gives the stored sequence or
    the error. (nats-py's `publish_async` never settles the future of a refused publish:
    its reply handler calls `APIError.from_error`, which raises instead of returning.)"""
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def settle(msg: Msg) -> None:
        if future.done():
            return
        if not msg.data:  # a status: 503, no stream took the message
            future.set_exception(NoStreamResponseError())
            return
        reply = codec.loads(msg.data)
        if error := reply.get("error"):
            future.set_exception(
                APIError(
                    code=error.get("code"),
                    err_code=error.get("err_code"),
                    description=error.get("description"),
                )
            )
        else:
            future.set_result(int(reply["seq"]))

    reply, token = inbox.open(settle)
    future.add_done_callback(lambda _: inbox.close(token))
    try:
        await inbox.nc.publish(subject, payload, reply=reply, headers=headers)
    except BaseException:
        future.cancel()
        raise
    return future


LAST_PER_REQUEST = 1000  # literal subjects per multi_last request (the server answers 1024)


async def direct_last(
    nc: NATS, stream: str, subjects: list[str], timeout: float
) -> dict[str, DirectMsg]:
    """The newest message on each of `subjects` (literal subjects; those with none are
    left out): one batched direct get per LAST_PER_REQUEST subjects, all sent at once."""
    chunks = [subjects[i : i + LAST_PER_REQUEST] for i in range(0, len(subjects), LAST_PER_REQUEST)]
    batches = await asyncio.gather(
        *(
            direct_batch(nc, stream, {"multi_last": chunk, "batch": len(chunk)}, timeout)
            for chunk in chunks
        )
    )
    return {m.subject: m for batch in batches for m in batch}
