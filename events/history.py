"""Reading the log as history: pages of stored events and a live follow.

Pages use JetStream's batched direct get, so a page of `limit` events is one
request (asc) or `limit` small requests (desc), whatever the history's length.
A follow is an ordered consumer: history from a position, then live.
"""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

import nats.errors
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy

from events.delivery import stream_seq
from events.direct import DirectGetUnavailable, direct_batch, direct_last
from events.store import EventStore, StoreUnavailable
from events.subjects import ALL_EVENTS, STREAM_NAME, conversation_filter


@dataclass(frozen=True)
class StoredEvent:
    """An event exactly as stored, with its log position."""

    seq: int
    subject: str
    data: bytes

    def body(self) -> dict[str, Any]:
        return json.loads(self.data)  # type: ignore[no-any-return]

    def public(self) -> dict[str, Any]:
        """The API's event object: the stored event plus its position."""
        return {"object": "event", "seq": self.seq, **self.body()}


def subject_filter(conversation_id: str | None) -> str:
    return conversation_filter(conversation_id) if conversation_id else ALL_EVENTS


class History:
    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.nc = store.nc
        self.js = store.js

    async def _direct(self, request: dict[str, Any]) -> list[StoredEvent]:
        """One batched direct get on the event stream."""
        try:
            found = await direct_batch(self.nc, STREAM_NAME, request, self.store.timeout)
        except DirectGetUnavailable as exc:
            raise StoreUnavailable(str(exc)) from exc
        return [StoredEvent(m.seq, m.subject, m.data) for m in found]

    async def last_seqs(self, subjects: list[str]) -> dict[str, int]:
        """The position of the last message on each of `subjects` (literal subjects;
        those without any are left out)."""
        try:
            found = await direct_last(self.nc, STREAM_NAME, subjects, self.store.timeout)
        except DirectGetUnavailable as exc:
            raise StoreUnavailable(str(exc)) from exc
        return {subject: msg.seq for subject, msg in found.items()}

    async def page(
        self,
        conversation_id: str | None,
        after: int | None,
        limit: int,
        order: Literal["asc", "desc"] = "asc",
    ) -> tuple[list[StoredEvent], bool]:
        """Up to `limit` events after position `after` in `order`; and whether more follow."""
        subject = subject_filter(conversation_id)
        if order == "asc":
            found = await self._direct(
                {"seq": (after or 0) + 1, "next_by_subj": subject, "batch": limit + 1}
            )
            return found[:limit], len(found) > limit
        if conversation_id is None:
            return await self._all_desc(after, limit)
        found = []
        below = after - 1 if after else None
        while len(found) <= limit and (below is None or below > 0):
            request: dict[str, Any] = {"multi_last": [subject], "batch": 1024}
            if below is not None:
                request["up_to_seq"] = below
            # The newest message of each event-type subject up to `below` (a handful per
            # conversation): the max is the previous event of the conversation.
            candidates = await self._direct(request)
            if not candidates:
                break
            newest = max(candidates, key=lambda e: e.seq)
            found.append(newest)
            below = newest.seq - 1
        return found[:limit], len(found) > limit

    async def _all_desc(self, after: int | None, limit: int) -> tuple[list[StoredEvent], bool]:
        """Newest first across all conversations: every stream sequence is an event, so
        read the window just below `after` forwards and widen it past purged holes."""
        top = (after - 1) if after else await self.store.last_seq()
        found: list[StoredEvent] = []
        window = limit + 1
        while top > 0 and len(found) <= limit:
            start = max(1, top - window + 1)
            chunk = await self._direct(
                {"seq": start, "next_by_subj": ALL_EVENTS, "batch": top - start + 1}
            )
            found += sorted((e for e in chunk if e.seq <= top), key=lambda e: -e.seq)
            top = start - 1
            window = min(window * 2, 1000)
        return found[:limit], len(found) > limit

    async def follow(
        self, conversation_id: str | None, after: int = 0
    ) -> AsyncIterator[StoredEvent]:
        """Every event after position `after`, then live ones as they are appended."""
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if after else DeliverPolicy.ALL,
            opt_start_seq=after + 1 if after else None,
        )
        sub = await self.js.subscribe(
            subject_filter(conversation_id),
            stream=STREAM_NAME,
            ordered_consumer=True,
            config=config,
        )
        try:
            while True:
                try:
                    msg: Msg = await sub.next_msg(timeout=None)
                except nats.errors.TimeoutError:
                    continue
                yield StoredEvent(stream_seq(msg), msg.subject, msg.data)
        finally:
            await sub.unsubscribe()
