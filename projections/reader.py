"""Queries over views: one conversation, one item, and pages of either.

A page walks dense positions in windows of the size it still needs, so it reads
about `limit` keys whatever the conversation's length (plus any deleted holes).

Read-your-writes: a read names the log position it must see (the conversation's head).
When the stored views are a few events short of it, the reader folds those events from
the log itself (`caught_up`), so a read right after a write costs one more request, not
a wait for the projector.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from events.history import History
from events.ids import response_thread
from events.schema import decode, decode_lenient
from events.store import Head
from events.subjects import is_safe_id
from projections.fold import Folder
from projections.overlay import OverlayViews
from projections.store import ViewStore
from projections.views import (
    CHECKPOINT_KEY,
    ConversationView,
    IndexEntry,
    IndexView,
    ItemRef,
    ResponseView,
    conversation_key,
    index_entry_key,
    index_key,
    item_key,
    ref_key,
    response_input_key,
    response_key,
)

Order = Literal["asc", "desc"]
# The most events a read folds itself; a view further behind is waited for (the projector
# is then far behind or down, and folding a long tail per request would cost every reader).
READ_THROUGH_MAX = 64


class ProjectionLagging(Exception):
    """The views did not reach the required log position in time."""


class CursorNotFound(Exception):
    """The `after` cursor names nothing in this list."""


@dataclass(frozen=True)
class Page:
    data: list[dict[str, Any]]
    has_more: bool
    last_pos: int | None = None  # the position of data's last row (the next page's cursor)
    more_pos: int | None = None  # the position of the row after it (has_more), if any


class ViewReader:
    def __init__(
        self, views: ViewStore, wait_timeout: float = 5.0, history: History | None = None
    ) -> None:
        self.views = views
        self.wait_timeout = wait_timeout
        self.history = history  # the log, for reads that fold the last few events themselves
        # ActiveViews: a satisfied wait pins the bucket it read for the rest of the request
        self._pin: Callable[[], None] | None = getattr(views, "pin", None)

    async def conversation(self, conversation_id: str) -> ConversationView | None:
        raw = await self.views.get(conversation_key(conversation_id))
        return ConversationView(**raw) if raw else None

    async def checkpoint(self) -> int:
        raw = await self.views.get(CHECKPOINT_KEY)
        return int(raw["seq"]) if raw else 0

    async def conversation_at(self, conversation_id: str, min_seq: int) -> ConversationView:
        """The conversation view once it has applied the log up to `min_seq`."""
        view = await self._wait(
            lambda: self.conversation(conversation_id),
            lambda v: v is not None and v.last_seq >= min_seq,
        )
        assert view is not None
        return view

    async def conversation_with_items(
        self, conversation_id: str, min_seq: int
    ) -> tuple[ConversationView, list[dict[str, Any]]]:
        """The conversation as of `min_seq` or later and its live items (a model's
        context), in one point-in-time read of the views: one round trip instead of two.
        The projector stores items before the conversation view that commits them, so the
        items the view counts are there. When the views are behind `min_seq`, `caught_up`
        (the tail folded from the log, or a wait), then pages of items; likewise for a
        conversation too long for one read."""
        if self._pin:
            self._pin()
        key = conversation_key(conversation_id)
        patterns = [key, item_key(conversation_id, 0).rpartition(".")[0] + ".*"]
        found = await self.views.get_matching(patterns)
        if found is not None and key in found and found[key]["last_seq"] >= min_seq:
            conv = ConversationView(**found[key])
            keys = (item_key(conversation_id, pos) for pos in range(conv.next_item_pos))
            return conv, [found[k] for k in keys if k in found]
        conv, reader = await self.caught_up(conversation_id, min_seq)
        return conv, await reader.all_items(conv)

    async def caught_up(
        self,
        conversation_id: str,
        min_seq: int | Head | Awaitable[int] | Awaitable[Head],
        also: dict[str, Any] | None = None,
    ) -> tuple[ConversationView, "ViewReader"]:
        """The conversation as of log position `min_seq` or later, and a reader of its
        views at that point: the stored views when they have it; else, when at most
        READ_THROUGH_MAX events are missing, the stored views with those events folded
        in memory on top (the projector's own fold, so the same result); else the stored
        views once the projector has caught up. Other conversations' keys in the
        returned reader (the tenant's index) may be stale: it serves this one only.

        `min_seq` may be an awaitable (the head read in flight): the stored view is
        read meanwhile, so the two requests cost one round trip of waiting, not two.
        When it is (or gives) the Head read from the log and the stored view is exactly
        one event short of it (a read right after a one-event write), that event is
        folded from the head's own bytes: no read of the log at all.

        `also`: keys of this conversation the caller will read next (a page's cursor and
        items), read in the same point-in-time request as the view; their values are
        filled in when the stored view is the answer, and the keys are removed otherwise:
        the returned reader must then be asked, and when it folded events on top of the
        stored views it answers them from memory (the stored values with the fold on
        top: the state at the head, no further read)."""
        if self._pin:
            self._pin()  # before the task below, which inherits this context
        key = conversation_key(conversation_id)
        extra = list(also or ())
        stored = asyncio.ensure_future(
            self.views.get_many([key, *extra]) if extra else self.views.get(key)
        )
        if not isinstance(min_seq, int | Head):
            try:
                min_seq = await min_seq
            except BaseException:
                stored.cancel()
                raise
        head = min_seq if isinstance(min_seq, Head) else None
        min_seq = head.seq if head is not None else min_seq
        raws = await stored
        raw = raws[0] if extra else raws
        view = ConversationView(**raw) if raw else None
        if also is not None:
            also.clear()
        if view is not None and view.last_seq >= min_seq:
            if extra:
                also.update(zip(extra, raws[1:], strict=True))
            return view, self
        reader = None
        seed = {key: raw, **dict(zip(extra, raws[1:], strict=True))} if extra else {key: raw}
        if head is not None and view is not None and head.data and head.prev_seq == view.last_seq:
            reader = await self._fold_head(seed, head)
        if reader is None:
            reader = await self._fold_tail(conversation_id, key, raw, min_seq, seed)
        if reader is not None:
            folded = await reader.conversation(conversation_id)
            if folded is not None and folded.last_seq >= min_seq:
                return folded, reader
        return await self.conversation_at(conversation_id, min_seq), self

    async def response_caught_up(
        self, response_id: str, min_seq: int
    ) -> tuple[ResponseView | None, "ViewReader"]:
        """`caught_up` for a response (its thread up to `min_seq`, the thread's head)."""
        thread = response_thread(response_id)
        if thread != response_id:
            _, reader = await self.caught_up(thread, min_seq)
            return await reader.response(response_id), reader
        if self._pin:
            self._pin()
        key = response_key(thread, response_id)
        raw = await self.views.get(key)
        view = ResponseView(**raw) if raw else None
        if view is not None and view.last_seq >= min_seq:
            return view, self
        reader = await self._fold_tail(thread, key, raw, min_seq, {key: raw})
        if reader is not None:
            folded = await reader.response(response_id)
            if folded is not None and folded.last_seq >= min_seq:
                return folded, reader
        return await self._response_waited(response_id, min_seq), self

    async def _fold_tail(
        self,
        thread: str,
        key: str,
        raw: dict[str, Any] | None,
        min_seq: int,
        seed: dict[str, dict[str, Any] | None],
    ) -> "ViewReader | None":
        """A reader of the stored views plus the thread's events after `raw` (the
        stored view under `key`) folded in memory; None without a log to read, or when
        the tail is longer than READ_THROUGH_MAX or does not reach `min_seq`. `seed`:
        stored values read in the same point-in-time request as `raw` (`raw` included),
        answered from memory."""
        if self.history is None:
            return None
        after = int(raw["last_seq"]) if raw else 0
        stored, more = await self.history.page(thread, after, READ_THROUGH_MAX)
        if more or not stored or stored[-1].seq < min_seq:
            return None
        overlay = OverlayViews(self.views, seed)
        await Folder(overlay, cache_size=0, checkpointing=False).fold(
            [decode_lenient(e.data, e.seq, e.subject) for e in stored]
        )
        return ViewReader(overlay, self.wait_timeout)

    async def _fold_head(
        self, seed: dict[str, dict[str, Any] | None], head: Head
    ) -> "ViewReader | None":
        """A reader of the stored views (`seed`: values read with the conversation view,
        which is exactly one event short of `head`) plus the head's event, decoded from
        the head read's own bytes and folded in memory; None when those bytes are not an
        event this version reads."""
        try:
            event = decode(head.data, head.seq)
        except ValidationError:
            return None
        overlay = OverlayViews(self.views, seed)
        await Folder(overlay, cache_size=0, checkpointing=False).fold([event])
        return ViewReader(overlay, self.wait_timeout)

    async def response(self, response_id: str) -> ResponseView | None:
        raw = await self.views.get(response_key(response_thread(response_id), response_id))
        return ResponseView(**raw) if raw else None

    async def response_at(self, response_id: str, min_seq: int) -> ResponseView | None:
        """The response as of its thread's position `min_seq` (read-your-writes)."""
        return (await self.response_caught_up(response_id, min_seq))[0]

    async def _response_waited(self, response_id: str, min_seq: int) -> ResponseView | None:
        """The response once the views have applied its thread up to `min_seq` (the
        thread's head): read-your-writes. The caller checks first that the head is not
        an erasure or deletion, after which nothing would ever arrive."""
        thread = response_thread(response_id)
        if thread != response_id:
            await self.conversation_at(thread, min_seq)
            return await self.response(response_id)
        view: ResponseView | None = await self._wait(
            lambda: self.response(response_id),
            lambda v: v is not None and v.last_seq >= min_seq,
        )
        return view

    async def response_input(self, response_id: str) -> list[dict[str, Any]]:
        raw = await self.views.get(response_input_key(response_thread(response_id), response_id))
        return list(raw["items"]) if raw else []

    async def all_items(self, conv: ConversationView) -> list[dict[str, Any]]:
        """Every live item of a conversation, oldest first (a model's context)."""
        keys = [item_key(conv.id, pos) for pos in range(conv.next_item_pos)]
        out: list[dict[str, Any]] = []
        for start in range(0, len(keys), 1000):
            found = await self.views.get_many(keys[start : start + 1000])
            out.extend(v for v in found if v is not None)
        return out

    async def wait_checkpoint(self, min_seq: int) -> None:
        await self._wait(self.checkpoint, lambda seq: seq >= min_seq)

    async def _wait(self, read: Callable[[], Any], ready: Callable[[Any], bool]) -> Any:
        deadline = time.monotonic() + self.wait_timeout
        delay = 0.0005
        while True:
            if self._pin:
                self._pin()
            value = await read()
            if ready(value):
                return value
            if time.monotonic() >= deadline:
                raise ProjectionLagging("the projection is behind the log; try again shortly")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)

    async def item(self, conversation_id: str, item_id: str) -> dict[str, Any] | None:
        if not is_safe_id(item_id):  # a key wildcard (`*`, `>`) would match another item
            return None
        ref = await self.views.get(ref_key(conversation_id, item_id))
        if ref is None or ref.get("deleted"):
            return None
        return await self.views.get(item_key(conversation_id, int(ref["pos"])))

    async def items(
        self,
        conv: ConversationView,
        after: str | None,
        limit: int,
        order: Order,
        known: dict[str, Any] | None = None,
    ) -> Page:
        """`known`: values already read of this reader's views (see `caught_up`)."""

        async def locate(item_id: str) -> int | None:
            key = ref_key(conv.id, item_id)
            raw = known[key] if known and key in known else await self.views.get(key)
            return ItemRef(**raw).pos if raw else None

        start = await self._start(after, order, conv.next_item_pos, locate)
        rows = await self._walk(
            start, order, conv.next_item_pos, limit, lambda pos: item_key(conv.id, pos), known
        )
        page = rows[:limit]
        return Page(
            [r for _, r in page],
            len(rows) > limit,
            page[-1][0] if page else None,
            rows[limit][0] if len(rows) > limit else None,
        )

    async def conversations(self, tenant: str, after: str | None, limit: int, order: Order) -> Page:
        """A page of the tenant's live conversations; `after` must be one of them."""
        raw = await self.views.get(index_key(tenant))
        count = IndexView(**raw).count if raw else 0

        async def locate(conversation_id: str) -> int | None:
            view = await self.conversation(conversation_id)
            return view.position if view and view.tenant == tenant else None

        start = await self._start(after, order, count, locate)
        entries = await self._walk(
            start, order, count, limit, lambda pos: index_entry_key(tenant, pos)
        )
        views = await self.views.get_many(
            [conversation_key(IndexEntry(**e).id) for _, e in entries[: limit + 1]]
        )
        live = [ConversationView(**v).public() for v in views if v and not v.get("deleted")]
        return Page(live[:limit], len(live) > limit)

    @staticmethod
    async def _start(
        after: str | None, order: Order, count: int, locate: Callable[[str], Any]
    ) -> int:
        if after is None:
            return 0 if order == "asc" else count - 1
        pos = await locate(after)
        if pos is None:
            raise CursorNotFound(after)
        return pos + 1 if order == "asc" else pos - 1

    async def _walk(
        self,
        start: int,
        order: Order,
        count: int,
        limit: int,
        key: Callable[[int], str],
        known: dict[str, Any] | None = None,
    ) -> list[tuple[int, dict[str, Any]]]:
        """Up to limit+1 live rows from `start` on, in order, with their positions; the
        extra one means has_more. Keys in `known` (values read along with the view) are
        not read again."""
        step = 1 if order == "asc" else -1
        have = known or {}
        rows: list[tuple[int, dict[str, Any]]] = []
        pos, window = start, 0
        while len(rows) <= limit and 0 <= pos < count:
            if (k := key(pos)) in have:  # read along with the view: no request
                if (v := have[k]) is not None:
                    rows.append((pos, v))
                pos += step
                continue
            # limit + 1 first, as if nothing had been read along, then doubling: past a
            # run of deleted items the walk takes as few requests as without a guess
            window = min(window * 2, 1000) if window else limit + 1
            end = min(count, pos + window) if step == 1 else max(-1, pos - window)
            keys = {p: key(p) for p in range(pos, end, step)}
            missing = [k for k in keys.values() if k not in have]
            read = dict(zip(missing, await self.views.get_many(missing), strict=True))
            for p, k in keys.items():
                if (v := read[k] if k in read else have[k]) is not None:
                    rows.append((p, v))
            pos = end
        return rows
