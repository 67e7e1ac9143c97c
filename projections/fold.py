"""Fold a batch of events into a ViewStore, writing each key once per batch.

A batch's writes are one ordered write, so a crash part way is repaired by redelivery:
item data first, then the response views, then the conversation views that commit them
(and carry `last_seq`), then the tenants' index counters and the checkpoint (the last
sequence of the batch, which readers of the conversation lists wait on). A KV store
writes them as atomic batches in that order, each acknowledged before the next is sent,
so a reader never sees a view commit what is not stored yet, and a batch costs one
round trip (one fsync with `sync_interval: always`) rather than one per phase. A rebuild
folds into a bucket that starts empty (`fresh=True`): a view the folder never wrote is
known to be absent, not read.
"""

from collections import OrderedDict
from typing import Any

from pydantic import BaseModel

from events.schema import (
    ConversationCreated,
    Event,
    ItemDeleted,
    ResponseEvent,
    Unrecognized,
)
from projections.apply import Change, Delete, PurgePrefix, Put, State, apply
from projections.store import ViewStore
from projections.views import (
    CHECKPOINT_KEY,
    ConversationView,
    IndexView,
    ItemRef,
    ResponseView,
    conversation_key,
    index_key,
    is_index_key,
    ref_key,
    response_key,
)

_DELETED = object()
_NO_INDEX = IndexView()
# A view as the folder holds it: the model `apply` returned (what it wrote this batch or
# remembers), or the dict a store returned.
View = dict[str, Any] | BaseModel


class Folder:
    """Applies batches of events in log order; keeps a bounded cache of hot views.

    The cache assumes this folder is the only writer of the store, which holds
    for the single active projector of a consumer and for in-memory folds.
    """

    def __init__(
        self,
        views: ViewStore,
        cache_size: int = 10_000,
        fresh: bool = False,
        checkpointing: bool = True,
    ) -> None:
        self.views = views
        self.cache_size = cache_size
        self.fresh = fresh
        # False for a read's fold of one conversation's tail over the stored views: the
        # checkpoint (how far the views got in the whole log) means nothing there.
        self.checkpointing = checkpointing
        # fresh: every conversation, response, index and checkpoint key this folder wrote
        # (the only ones the store can hold); item refs are read from the store.
        self._written: set[str] = set()
        # Views written lately, as models where `apply` gave them so (frozen: shared as is).
        self._cache: OrderedDict[str, View | None] = OrderedDict()
        # Views read from the store for the current batch, in one request (`_prefetch`).
        self._fetched: dict[str, dict[str, Any] | None] = {}
        self.applied = 0

    async def fold(self, events: list[Event | Unrecognized]) -> None:
        pending: dict[str, Any] = {}
        purges: list[PurgePrefix] = []
        try:
            await self._prefetch(events)
            for event in events:
                state = await self._state(event, pending)
                _, changes = apply(state, event)
                for change in changes:
                    self._stage(change, pending, purges)
            if self.checkpointing:
                checkpoint = await self._get(CHECKPOINT_KEY, pending)
                if events and events[-1].seq > (checkpoint or {}).get("seq", 0):
                    # Never backwards: a late redelivery of old events must not hide newer.
                    pending[CHECKPOINT_KEY] = {"seq": events[-1].seq}
            await self._flush(pending, purges)
        except BaseException:
            self._cache.clear()
            raise
        finally:
            self._fetched = {}
        self.applied += len(events)

    def forget(self) -> None:
        """Drop the cache: the store may no longer hold what this folder wrote."""
        self._cache.clear()

    async def checkpoint(self) -> int:
        """The last sequence these views have applied (0 for empty views)."""
        raw = await self._get(CHECKPOINT_KEY, {})
        return int(raw["seq"]) if raw else 0

    async def _get(self, key: str, pending: dict[str, Any]) -> View | None:
        if key in pending:
            value = pending[key]
            return None if value is _DELETED else value
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if key in self._fetched:
            return self._fetched[key]
        if self._known_absent(key):
            return None
        return await self.views.get(key)

    def _known_absent(self, key: str) -> bool:
        return self.fresh and _kind(key) != "data" and key not in self._written

    async def _prefetch(self, events: list[Event | Unrecognized]) -> None:
        """Read the conversation, item ref and response views the batch needs and the cache
        lacks in one request (a batched direct get on KV), not one request per view."""
        keys: dict[str, None] = {}
        for event in events:
            keys[conversation_key(event.conversation_id)] = None
            if isinstance(event, ItemDeleted):
                keys[ref_key(event.conversation_id, event.item_id)] = None
            elif isinstance(event, ResponseEvent):
                keys[response_key(event.conversation_id, event.response_id)] = None
        missing = [k for k in keys if k not in self._cache and not self._known_absent(k)]
        if missing:
            self._fetched = dict(zip(missing, await self.views.get_many(missing), strict=True))

    async def _state(self, event: Event | Unrecognized, pending: dict[str, Any]) -> State:
        """The views `event` reads."""
        conv_key = conversation_key(event.conversation_id)
        conv = _model(await self._get(conv_key, pending), ConversationView)
        index = _NO_INDEX
        if type(event) is ConversationCreated:  # the only event that reads or moves its index
            index = _model(await self._get(index_key(event.tenant), pending), IndexView) or index
        item = response = None
        if type(event) is ItemDeleted:
            ref = await self._get(ref_key(event.conversation_id, event.item_id), pending)
            item = _model(ref, ItemRef)
        elif isinstance(event, ResponseEvent):
            resp_key = response_key(event.conversation_id, event.response_id)
            response = _model(await self._get(resp_key, pending), ResponseView)
        return State(conv, index, item, response)

    @staticmethod
    def _stage(change: Change, pending: dict[str, Any], purges: list[PurgePrefix]) -> None:
        if isinstance(change, Put):
            pending[change.key] = change.view
        elif isinstance(change, Delete):
            pending[change.key] = _DELETED
        else:
            for key in [k for k in pending if k.startswith(change.prefix)]:
                del pending[key]
            purges.append(change)

    async def _flush(self, pending: dict[str, Any], purges: list[PurgePrefix]) -> None:
        def as_change(key: str) -> Change:
            value = pending[key]
            return Delete(key) if value is _DELETED else Put(key, value)

        kinds: dict[str, list[str]] = {"data": [], "response": [], "commit": [], "last": []}
        for k in pending:
            kinds[_kind(k)].append(k)
        data, responses, commits, last = kinds.values()
        if self.fresh:  # before writing: a write that fails may still have landed
            self._written.update(responses, commits, last)
        keys = (*data, *responses, *commits, *last)
        await self.views.write([*purges, *(as_change(k) for k in keys)])
        for key in (*responses, *commits, *last):
            self._remember(key, pending[key])

    def _remember(self, key: str, value: Any) -> None:
        self._cache[key] = None if value is _DELETED else value
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


def _model(value: View | None, cls: type[Any]) -> Any:
    """The view as its model (validated from a stored dict)."""
    if value is None or isinstance(value, BaseModel):
        return value
    return cls(**value)


def _kind(key: str) -> str:
    """Where `key` goes in the ordered write: item data and refs and response inputs
    (data), response views, conversation views (commit), index counters and the
    checkpoint (last)."""
    if key.startswith("conv."):
        return "commit" if key.count(".") == 1 else "data"
    if key.startswith("resp."):
        return "response" if key.count(".") == 2 else "data"
    if is_index_key(key) or key == CHECKPOINT_KEY:
        return "last"
    return "data"
