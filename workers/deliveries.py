"""How a model worker takes response requests: pull requests on the shared durable
consumer, asking for as many requests as it has free slots, each request handled the
moment it arrives.

Not FastStream's pull subscriber, nor nats-py's `fetch`:
- FastStream fetches a fixed batch per round trip. With a batch of one, a worker streaming
  16 responses took one request per ~8 ms (each fetch waits its turn several times on a
  loop busy with the others' deltas): requests waited 100-200 ms in the log (claim p50
  215 ms at 16 in flight, with 11-14 of 16 slots free). A larger fixed batch takes
  requests the worker has no slot for, away from idle workers and not kept alive.
- nats-py's `fetch(n)` returns once its batch is complete or its pull request ends. With
  two workers on one consumer, nats-server kept a partly served request open: delivered
  requests then waited in the fetch for its full timeout (5 s).

So one pull request at a time asks for the free slots, every delivery is started as it
arrives, and when the request is served in full or ends (408 when it expired; 409 and
others when the consumer went away or the server refused it) the next one asks for the
slots free then. Its reply subject names it (`<inbox>.<token>`): a status of an older
request is not taken for the current one's end (deliveries carry their own subject, so
they are counted, not named). A request sent before the connection came back is given
up at the next tick (a restarted server forgot it), and one dropped without a word
otherwise after its expiry and a grace.
"""

import asyncio
import contextlib
import itertools
import json
import logging
import time

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from events.subjects import MODEL_WORKERS, REQUESTS_FILTER, STREAM_NAME
from workers.model_worker import ModelWorker

log = logging.getLogger("convstore.worker")

EXPIRES = 5.0  # seconds a pull request stays open on the server
GRACE = 2.0  # seconds past that before an unanswered request counts as lost
TICK = 0.5  # seconds between checks for lost requests (and retries after a refusal)
NEXT = f"$JS.API.CONSUMER.MSG.NEXT.{STREAM_NAME}.{MODEL_WORKERS}"
ENDS = frozenset({"404", "408"})  # a request's normal ends: nothing there, expired


def consumer_config(ack_wait: float) -> ConsumerConfig:
    """The shared durable's settings (as FastStream made it before: same name, same
    filter, so a running deployment keeps its consumer and its acks)."""
    return ConsumerConfig(
        durable_name=MODEL_WORKERS,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=ack_wait,
        max_ack_pending=10_000,
        filter_subject=REQUESTS_FILTER,
    )


async def ensure_consumer(js: JetStreamContext, ack_wait: float) -> None:
    """The shared durable, made when missing (an existing one keeps its settings)."""
    try:
        await js.consumer_info(STREAM_NAME, MODEL_WORKERS)
    except NotFoundError:
        await js.add_consumer(STREAM_NAME, consumer_config(ack_wait))


class Deliveries:
    """Up to `concurrency` deliveries handled at once, each in a task of its own."""

    def __init__(self, worker: ModelWorker, concurrency: int) -> None:
        self.worker = worker
        self.free = concurrency
        self.tasks: set[asyncio.Task[None]] = set()
        # the pull request in flight: (its token, deliveries still due, when to give up)
        self.request: tuple[str, int, float] | None = None
        self._tokens = itertools.count()
        self._nc: NATS | None = None
        self._inbox = ""
        self._refused = False  # the last request was refused: check the consumer first
        self._at = 0  # the connection's reconnect count when the request was sent

    async def pull(self, nc: NATS, js: JetStreamContext, ack_wait: float) -> None:
        """Take requests until cancelled; NATS errors are waited out."""
        self._inbox = nc.new_inbox()
        sub: Subscription | None = None
        try:
            while True:
                try:
                    if sub is None:
                        await ensure_consumer(js, ack_wait)
                        sub = await nc.subscribe(f"{self._inbox}.*", cb=self._arrived)
                        self._nc = nc
                    elif self._refused:
                        await ensure_consumer(js, ack_wait)
                    self._refused = False
                    if self.request is not None and (
                        time.monotonic() > self.request[2] or nc.stats["reconnects"] != self._at
                    ):
                        self.request = None  # lost with the connection
                    await self.ask()
                except Exception as exc:  # NATS away: try again
                    log.debug("taking response requests: %r", exc)
                await asyncio.sleep(TICK)
        finally:
            self._nc = None
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def ask(self) -> None:
        """A pull request for the free slots, unless one is in flight."""
        if self.request is not None or self.free <= 0 or self._nc is None or self._refused:
            return
        token = str(next(self._tokens))
        self.request = (token, self.free, time.monotonic() + EXPIRES + GRACE)
        self._at = self._nc.stats["reconnects"]
        body = json.dumps({"batch": self.free, "expires": int(EXPIRES * 1e9)}).encode()
        try:
            await self._nc.publish(NEXT, body, reply=f"{self._inbox}.{token}")
        except Exception:
            self.request = None
            raise

    async def _arrived(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            if self.request is not None:
                token, due, deadline = self.request
                self.request = (token, due - 1, deadline) if due > 1 else None
            await self._start(msg)
            if self.request is None:  # served in full: ask for what is free now
                await self._ask_quietly()
            return
        if status == "100":  # a heartbeat
            return
        if self.request is None or msg.subject.rpartition(".")[2] != self.request[0]:
            return  # the end of a request already given up
        self.request = None
        if status not in ENDS:  # the consumer gone, a leader change, a refusal
            log.debug("pull request ended: %s %s", status, msg.headers)
            self._refused = True
            return
        await self._ask_quietly()

    async def _start(self, msg: Msg) -> None:
        if self.free <= 0:
            # Delivered on a request this worker had given up as lost: give it back at
            # once for any worker with a slot.
            with contextlib.suppress(Exception):
                await msg.nak()
            return
        self.free -= 1
        task = asyncio.create_task(self._handle(msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, msg: Msg) -> None:
        try:
            await self.worker.handle(msg)
        except Exception:
            # NATS away or a bug: the delivery is not acked and comes back after ACK_WAIT.
            log.exception("response request at seq %s", msg.metadata.sequence.stream)
        finally:
            self.free += 1
            await self._ask_quietly()

    async def _ask_quietly(self) -> None:
        with contextlib.suppress(Exception):  # NATS away: the pull loop asks again
            await self.ask()

    async def stop(self) -> None:
        """Cancel the responses still running: their deliveries are not acked, and
        another worker takes them after ack_wait."""
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
