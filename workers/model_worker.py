"""The model worker: takes response requests from a shared durable pull consumer, calls
the model, streams its deltas over NATS and appends the outcome to the log.

Exactly once, with any number of workers, by deciding everything on the log:
- a worker claims a response by appending ResponseInProgress (attempt n) with optimistic
  concurrency on the thread, so two workers cannot both claim it, and a conversation's
  responses are claimed only in order (the oldest pending one first); the model is
  called while the claim is being appended, but nothing it streams is published before
  the claim is stored; a claim that loses to an append that leaves the response and its
  context as they were (another request, metadata) keeps the call for the next claim,
  any other loss cancels it, so the upstream is asked once per claim that could win;
- the outcome (output items, and on a conversation the input and output items, plus the
  terminal event) is one atomic append, made only while the response is still this
  attempt's and not cancelled;
- a redelivery of a claimed response means its worker stopped (the delivery was not kept
  alive): it is retried if nothing of its output was streamed yet, failed otherwise, so a
  client never sees output twice.
"""

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from events import response_stream
from events.connection import cancel_for_sure
from events.schema import (
    EventBase,
    ItemAdded,
    ResponseCompleted,
    ResponseEvent,
    ResponseFailed,
    ResponseInProgress,
    ResponseRequested,
    decode,
)
from events.store import TENANT_HEADER, ConcurrencyConflict, EventStore, Head
from events.subjects import conversation_subject
from projections.reader import ViewReader
from projections.responses import apply_response
from projections.views import ConversationView, ResponseView
from workers.chain_memory import ChainMemory
from workers.context import ContextError, build_context, drop_oldest, remembered
from workers.output import OutputBuilder
from workers.providers.base import CONTEXT_EXCEEDED, ModelCall, ProviderError
from workers.providers.registry import Registry
from workers.thread_memory import ThreadMemory

log = logging.getLogger("convstore.worker")

ACK_WAIT = 30.0  # a delivery not kept alive this long goes to another worker
WAIT_TURN = 0.2  # redelivery delay while an older response of the conversation runs
RETRIES = 3  # upstream attempts per response (retryable errors, nothing streamed yet)
STARTED = frozenset({"response.created", "response.queued", "response.in_progress"})


@dataclass
class Speculation:
    """A model call started while a claim was appended that lost to another append. It is
    kept for the next decision: when that claims the same response with the same context
    (the thread moved for another reason: another request, metadata, a concurrent reader's
    stale head), the call goes on, so the upstream is asked once, not once per attempt."""

    context: list[dict[str, Any]]
    next_seq: int
    call: "asyncio.Task[None]"
    writer: response_stream.StreamWriter
    builder: OutputBuilder

    async def drop(self) -> None:
        await cancel_for_sure(self.call)


@dataclass
class Claim:
    view: ResponseView  # as of the claim (in progress, this attempt)
    attempt: int
    seq: int  # log position of the claim
    call: "asyncio.Task[None]"  # the model call, started while the claim was appended
    builder: OutputBuilder  # the call's output, on the response's stream
    event: ResponseInProgress
    # The conversation and its items as read for the claim, when every event on the thread
    # between them and the claim is known: none, or the request (see ThreadMemory).
    before: tuple[ConversationView, list[dict[str, Any]], list[EventBase]] | None = None
    outcome_seq: int | None = None  # the outcome's first event, when appended on the claim


def _folded(view: ResponseView, events: list[tuple[EventBase, int]]) -> ResponseView:
    """The view after `events` (with their log positions), folded here with the
    projection's own function instead of waiting for the projector to do it."""
    for event, seq in events:
        if isinstance(event, ResponseEvent):
            folded, _ = apply_response(view, event.model_copy(update={"seq": seq}))
            view = folded or view
    return view


class Done(Exception):
    """Nothing (more) to do for this delivery: ack it."""


class NotYet(Exception):
    """An older response of the conversation is still pending: redeliver later."""


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class ModelWorker:
    def __init__(
        self,
        nc: NATS,
        js: JetStreamContext,
        store: EventStore,
        reader: ViewReader,
        registry: Registry,
        name: str | None = None,
        ack_wait: float = ACK_WAIT,
    ) -> None:
        self.nc = nc
        self.js = js
        self.store = store
        self.reader = reader
        self.registry = registry
        self.name = name or worker_name()
        self.ack_wait = ack_wait
        self.memory = ThreadMemory()
        self.chains = ChainMemory()
        self.running = 0  # deliveries being handled now (convstore status shows it)

    async def handle(self, msg: Msg) -> None:
        """One delivery of a ResponseRequested event."""
        self.running += 1
        try:
            await self._delivery(msg)
        finally:
            self.running -= 1

    async def _delivery(self, msg: Msg) -> None:
        request = decode(msg.data, msg.metadata.sequence.stream)
        if not isinstance(request, ResponseRequested):
            await msg.ack()
            return
        heartbeat = asyncio.create_task(_keep_alive(msg, self.ack_wait / 4))
        try:
            # A first delivery is most likely still its thread's newest event: the claim
            # is appended against it without reading the head first.
            delivered = None
            if msg.metadata.num_delivered == 1 and request.hash:
                tenant = (msg.headers or {}).get(TENANT_HEADER)
                delivered = Head(request.seq, request.id, request.type, request.hash, tenant)
            await self._handle(request, delivered)
        except NotYet:
            # Back off while the older response runs: a long one should not cost a read
            # of the thread every WAIT_TURN.
            await msg.nak(delay=min(WAIT_TURN * msg.metadata.num_delivered, 1.0))
            return
        except Done:
            pass
        finally:
            await cancel_for_sure(heartbeat)
        await msg.ack()

    async def _handle(self, request: ResponseRequested, delivered: Head | None = None) -> None:
        cancelled = asyncio.Event()
        subject = conversation_subject(request.conversation_id, "ResponseCancelled")

        async def on_cancel(m: Msg) -> None:
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(m.data).get("response_id") == request.response_id:
                    cancelled.set()

        # Subscribed before the claim: a cancel appended after it is always seen.
        sub = await self.nc.subscribe(subject, cb=on_cancel)
        try:
            claim = await self._claim(request, delivered)
            await self._run(request, claim, cancelled)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _state(
        self, request: ResponseRequested, repair: bool = False
    ) -> tuple[Head, ResponseView]:
        """The thread's head and the response as of it; Done when there is nothing to do.

        With `repair`, a finished response whose stream lacks its final event (its writer
        died between the append and the publish) gets it now, so no client waits forever."""
        head = await self.store.head(request.conversation_id)
        if head is None or head.event_type == "ConversationPurged":
            raise Done
        if head.event_type == "ResponseDeleted" and request.conversation_id == request.response_id:
            raise Done
        view = await self.reader.response_at(request.response_id, head.seq)
        if view is None:
            raise Done
        if view.terminal:
            if repair:
                await self._end_stream(view)
            raise Done
        return head, view

    async def _end_stream(self, view: ResponseView) -> None:
        last = await response_stream.last_event(self.js, view.id)
        if last is not None and last.get("type") in response_stream.TERMINAL_TYPES:
            return
        next_seq = (last or {}).get("sequence_number", -1) + 1
        writer = response_stream.StreamWriter(self.nc, self.js, view.id, next_seq)
        await writer.emit(f"response.{view.status}", response=view.public())

    async def _fresh(
        self, request: ResponseRequested, delivered: Head | None
    ) -> tuple[Head, ResponseView] | None:
        """The fast path for a request nobody touched yet (it is its thread's newest event):
        its view is the request itself, and the conversation is read as of just before it,
        which the projector has long folded; no waiting for the projector to fold it.

        `delivered` (the request as delivered, on a first delivery) is taken as the head
        unread: the claim's append expects it as the thread's last event, so a thread that
        moved answers wrong-last-sequence, and the next decision reads the head."""
        head = delivered or await self.store.head(request.conversation_id)
        if head is None or head.seq != request.seq:
            return None
        view, _ = apply_response(None, request)
        assert view is not None
        return head, view

    async def _claim(self, request: ResponseRequested, delivered: Head | None = None) -> Claim:
        """Claim the response and start the model call; Done, NotYet or an error otherwise.

        Independent requests overlap: the conversation and its items (one read) are read
        while the head is, and the model is called while the claim is appended. What the
        call streams meanwhile is held, and published only once the claim is stored; a
        call no claim takes is cancelled, and its output is never seen."""
        spec: list[Speculation] = []  # at most one, carried from a lost claim to the next
        try:
            while True:
                tasks: list[asyncio.Task[Any]] = []
                if request.conversation_id != request.response_id:
                    tasks.append(asyncio.ensure_future(self._conversation(request)))
                try:
                    claim = await self._try_claim(request, tasks, spec, delivered)
                    delivered = None  # a decision after a lost claim reads the head
                finally:
                    for task in tasks:
                        await cancel_for_sure(task)
                if claim is not None:
                    return claim
        finally:
            for kept in spec:  # a call no claim took (NotYet, Done, an error)
                await kept.drop()

    async def _conversation(
        self, request: ResponseRequested
    ) -> tuple[ConversationView, list[dict[str, Any]]]:
        """The conversation and its items as of the request's context at least (the fast
        path's head is the request): remembered from this worker's last response on it,
        or read."""
        known = self.memory.get(request.conversation_id, request.context_seq)
        if known is not None:
            return known
        return await self.reader.conversation_with_items(
            request.conversation_id, request.context_seq
        )

    async def _try_claim(
        self,
        request: ResponseRequested,
        tasks: list["asyncio.Task[Any]"],
        spec: list[Speculation],
        delivered: Head | None = None,
    ) -> Claim | None:
        """One decision on the thread's head: the claim, or None when the thread moved.
        Tasks it starts go into `tasks`, which the caller cancels; the model call goes into
        `spec` instead, so that a lost claim's call can serve the next decision."""
        fresh = await self._fresh(request, delivered)
        if fresh is not None:
            head, view = fresh
            last = None
        else:
            head, view = await self._state(request, repair=True)
            last = await response_stream.last_event(self.js, view.id)
        next_seq = (last or {}).get("sequence_number", -1) + 1
        items: list[dict[str, Any]] | None = None
        before: tuple[ConversationView, list[dict[str, Any]], list[EventBase]] | None = None
        if tasks:  # on a conversation
            conv, items = await tasks[0]
            if head.seq == request.seq and conv.last_seq in (request.context_seq, request.seq):
                before = (conv, items, [request] if conv.last_seq < request.seq else [])
            if conv.deleted:
                await self._fail(
                    request, "conversation_deleted", "The conversation was deleted.", next_seq
                )
                raise Done
            if conv.pending_responses and conv.pending_responses[0] != view.id:
                raise NotYet
        if view.status == "in_progress" and last and last.get("type") not in STARTED:
            # Its worker stopped after streaming part of the output: retrying would
            # show the client a second, different output.
            await self._fail(
                request,
                "server_error",
                "The worker generating this response stopped after part of the output "
                "was streamed; the response was not retried.",
                next_seq,
            )
            raise Done
        claim = ResponseInProgress(
            conversation_id=request.conversation_id,
            response_id=view.id,
            attempt=view.attempt + 1,
            worker=self.name,
            context_seq=head.seq,
            actor={"id": self.name, "kind": "worker"},
        )
        append = asyncio.create_task(
            self.store.append([claim], head.seq, head.hash, head.tenant, head.gone)
        )
        tasks.append(append)
        problem: ContextError | None = None
        context: list[dict[str, Any]] | None = None
        try:
            context = await build_context(
                self.reader, self.store, view, request.input, items, self.chains
            )
        except ContextError as exc:
            problem = exc
        kept = spec.pop() if spec else None
        if kept is not None and (
            context is None
            or kept.context != context
            or kept.next_seq != next_seq
            or kept.call.cancelled()
        ):
            await kept.drop()
            kept = None
        if kept is None and context is not None:
            writer = response_stream.StreamWriter(self.nc, self.js, view.id, next_seq, held=True)
            if next_seq == 0:
                running = view.model_copy(update={"status": "in_progress"}).public()
                if view.background:  # as OpenAI opens a background stream: queued first
                    queued = view.model_copy(update={"status": "queued"}).public()
                    await writer.emit("response.created", response=queued)
                    await writer.emit("response.queued", response=queued)
                else:
                    await writer.emit("response.created", response=running)
                await writer.emit("response.in_progress", response=running)
            builder = OutputBuilder(writer, request.conversation_id)
            call = asyncio.create_task(self._call_model(request, context, builder))
            kept = Speculation(context, next_seq, call, writer, builder)
        if kept is not None:
            spec.append(kept)
        try:
            seq = await append
        except ConcurrencyConflict:
            return None  # the thread moved (a cancel, another claim, new items): decide again
        if kept is None:  # the context could not be built
            await self._fail(request, "invalid_prompt", str(problem), next_seq, claim.attempt)
            raise Done
        spec.clear()  # the claim's call now
        await kept.writer.release()
        folded = _folded(view, [(claim, seq)])
        return Claim(folded, claim.attempt, seq, kept.call, kept.builder, claim, before)

    async def _run(
        self, request: ResponseRequested, claim: Claim, cancelled: asyncio.Event
    ) -> None:
        call, builder = claim.call, claim.builder
        watch = asyncio.create_task(self._confirmed_cancel(request, cancelled))
        try:
            await asyncio.wait([call, watch], return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel_for_sure(watch)
            if not call.done():  # cancelled (or this handler was): stop the upstream call now
                await cancel_for_sure(call)
        if call.cancelled():
            await self._finish_cancelled(request, builder.writer)
            return
        writer = builder.writer
        error = call.exception()
        if isinstance(error, ProviderError):
            await self._fail(request, error.code, error.message, writer.next_seq, claim.attempt)
            return
        if error is not None:
            log.error("response %s: %r", claim.view.id, error)
            await self._fail(
                request,
                "server_error",
                "The model call failed.",
                writer.next_seq,
                claim.attempt,
            )
            return
        await self._complete(request, claim, builder)

    async def _confirmed_cancel(self, request: ResponseRequested, signal: asyncio.Event) -> None:
        """Returns once the log says the response is cancelled. A message on the cancel
        subject is only a hint: a publish that JetStream rejected reaches subscribers too."""
        while True:
            await signal.wait()
            signal.clear()
            for _ in range(20):
                try:
                    await self._state(request)  # Done once cancelled (or deleted, erased)
                except Done:
                    return
                await asyncio.sleep(0.05)

    async def _call_model(
        self, request: ResponseRequested, context: list[dict[str, Any]], builder: OutputBuilder
    ) -> None:
        route = self.registry.route(request.model)
        truncate = request.params.get("truncation") == "auto"
        delay, attempt = 0.5, 1
        while True:
            call = ModelCall(route.upstream_model, request.instructions, context, request.params)
            try:
                async for chunk in route.provider.stream(call):
                    await builder.add(chunk)
                return
            except ProviderError as exc:
                if builder.started:
                    raise
                if exc.code == CONTEXT_EXCEEDED and truncate:
                    shorter = drop_oldest(context, len(request.input))
                    if shorter is None:
                        raise
                    context = shorter
                    continue
                if not exc.retryable or attempt == RETRIES:
                    raise
                await asyncio.sleep(min(exc.retry_after or delay, 10.0))
                delay *= 2
                attempt += 1

    async def _complete(
        self, request: ResponseRequested, claim: Claim, builder: OutputBuilder
    ) -> None:
        incomplete = builder.finish == "length"
        output = await builder.close("incomplete" if incomplete else "completed")
        usage = None
        if builder.usage is not None:
            u = builder.usage
            usage = {
                "input_tokens": u.input_tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": u.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": u.input_tokens + u.output_tokens,
            }
        thread, rid = request.conversation_id, request.response_id
        done = ResponseCompleted(
            conversation_id=thread,
            response_id=rid,
            status="incomplete" if incomplete else "completed",
            output=output,
            usage=usage,
            incomplete_details={"reason": "max_output_tokens"} if incomplete else None,
            completed_at=int(time.time()),
            actor={"id": self.name, "kind": "worker"},
        )
        events: list[EventBase] = []
        if thread != rid:  # on a conversation: its input and output become its items
            events = [
                ItemAdded(
                    conversation_id=thread,
                    item=item,
                    response_id=rid,
                    actor=done.actor,
                    copied_from=request.copied_from.get(item["id"]),
                )
                for item in [*request.input, *output]
            ]
        outcome: list[EventBase] = [*events, done]
        view = await self._finish(request, claim.attempt, outcome, claim)
        if view is not None:
            self._hand_over(request, builder.writer)
            kind = "response.incomplete" if incomplete else "response.completed"
            await builder.writer.emit(kind, response=view.public())
            if remembered(view):  # the next turn of its chain may well come here
                items = [*request.input, *output]
                self.chains.put(rid, request.previous_response_id, items)
        if view is not None and claim.before is not None and claim.outcome_seq is not None:
            # Every event on the thread since `before` is known: remember the result.
            first = claim.outcome_seq
            conv, items, known = claim.before
            await self.memory.remember(
                conv,
                items,
                [
                    *known,
                    claim.event.model_copy(update={"seq": claim.seq}),
                    *(e.model_copy(update={"seq": first + n}) for n, e in enumerate(outcome)),
                ],
            )

    async def _finish(
        self,
        request: ResponseRequested,
        attempt: int | None,
        events: list[EventBase],
        claim: Claim | None = None,
    ) -> ResponseView | None:
        """Append the outcome if the response is still ours; the view after it, or None.

        When nothing was appended to the thread since our claim, the claim is still ours
        without asking the views; otherwise they decide (a cancel, a takeover, new items).
        With the claim at hand, the outcome is first appended as if the claim were still
        the thread's head (the head the store remembers from appending it): no head read
        on the common path, and a wrong-last-sequence answer when it is not."""
        known = self.store.appended_head(request.conversation_id) if claim else None
        if claim is not None and known is not None and known.seq == claim.seq and not known.gone:
            try:
                seq = await self.store.append(events, known.seq, known.hash, known.tenant)
            except ConcurrencyConflict:
                pass  # the thread moved on: decide on its head
            else:
                first = seq - len(events) + 1
                claim.outcome_seq = first
                return _folded(claim.view, [(e, first + n) for n, e in enumerate(events)])
        while True:
            head = await self.store.head(request.conversation_id)
            if claim is not None and head is not None and head.seq == claim.seq:
                view = claim.view
            else:
                try:
                    head, view = await self._state(request)
                except Done:
                    return None
            if attempt is not None and (view.status != "in_progress" or view.attempt != attempt):
                return None  # cancelled, or taken over after we stalled
            if head.gone:  # deleted meanwhile: the response ends, adding no items to it
                events = [e for e in events if isinstance(e, ResponseEvent)]
            try:
                seq = await self.store.append(events, head.seq, head.hash, head.tenant, head.gone)
            except ConcurrencyConflict:
                continue
            first = seq - len(events) + 1
            return _folded(view, [(e, first + n) for n, e in enumerate(events)])

    async def _fail(
        self,
        request: ResponseRequested,
        code: str,
        message: str,
        next_seq: int,
        attempt: int | None = None,
    ) -> None:
        failed = ResponseFailed(
            conversation_id=request.conversation_id,
            response_id=request.response_id,
            error={"code": code, "message": message},
            actor={"id": self.name, "kind": "worker"},
        )
        view = await self._finish(request, attempt, [failed])
        if view is not None:
            writer = response_stream.StreamWriter(self.nc, self.js, view.id, next_seq)
            self._hand_over(request, writer)
            await writer.emit("response.failed", response=view.public())

    def _hand_over(self, request: ResponseRequested, writer: response_stream.StreamWriter) -> None:
        """Send the conversation's head after the outcome just appended with the terminal
        event: the API replica relaying it appends the client's next turn without reading
        the head (the append's guard refuses it if the thread moved since)."""
        if request.conversation_id != request.response_id:
            head = self.store.appended_head(request.conversation_id)
            # A deleted conversation's head is never handed over: a head header does not
            # carry `gone`, and the next turn must be refused.
            writer.thread_head = head if head is not None and not head.gone else None

    async def _finish_cancelled(
        self, request: ResponseRequested, writer: response_stream.StreamWriter
    ) -> None:
        head = await self.store.head(request.conversation_id)
        view = await self.reader.response_at(request.response_id, head.seq if head else 0)
        if view is not None and view.status == "cancelled":
            await writer.emit("response.cancelled", response=view.public())


async def _keep_alive(msg: Msg, every: float) -> None:
    """Tell JetStream the delivery is being worked on, so it is not given to another worker
    while this one is alive; when this process dies, the delivery returns after ack_wait."""
    while True:
        await asyncio.sleep(every)
        with contextlib.suppress(Exception):
            await msg.in_progress()
