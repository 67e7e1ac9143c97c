"""Fold a batch of events into a ViewStore, writing each key once per batch.

Writes go in three phases so a crash between them is repaired by redelivery:
item data first, then the conversation views that commit it (and carry
`last_seq`), then the tenants' index counters and the checkpoint (the last sequence of
the batch, which readers of the conversation lists wait on). Within a phase, writes run
concurrently.
"""

from collections import OrderedDict
from typing import Any

from events.schema import (
    DEFAULT_TENANT,
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


class Folder:
    """Applies batches of events in log order; keeps a bounded cache of hot views.

    The cache assumes this folder is the only writer of the store, which holds
    for the single active projector of a consumer and for in-memory folds.
    """

    def __init__(self, views: ViewStore, cache_size: int = 10_000) -> None:
        self.views = views
        self.cache_size = cache_size
        self._cache: OrderedDict[str, dict[str, Any] | None] = OrderedDict()
        self.applied = 0

    async def fold(self, events: list[Event | Unrecognized]) -> None:
        pending: dict[str, Any] = {}
        purges: list[PurgePrefix] = []
        try:
            for event in events:
                state = await self._state(event, pending)
                _, changes = apply(state, event)
                for change in changes:
                    self._stage(change, pending, purges)
            checkpoint = await self._get(CHECKPOINT_KEY, pending)
            if events and events[-1].seq > (checkpoint or {}).get("seq", 0):
                # Never backwards: a late redelivery of old events must not hide newer ones.
                pending[CHECKPOINT_KEY] = {"seq": events[-1].seq}
            await self._flush(pending, purges)
        except BaseException:
            self._cache.clear()
            raise
        self.applied += len(events)

    async def checkpoint(self) -> int:
        """The last sequence these views have applied (0 for empty views)."""
        raw = await self._get(CHECKPOINT_KEY, {})
        return int(raw["seq"]) if raw else 0

    async def _get(self, key: str, pending: dict[str, Any]) -> dict[str, Any] | None:
        if key in pending:
            value = pending[key]
            return None if value is _DELETED else value
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        return await self.views.get(key)

    async def _state(self, event: Event | Unrecognized, pending: dict[str, Any]) -> State:
        conv = await self._get(conversation_key(event.conversation_id), pending)
        if isinstance(event, ConversationCreated):
            tenant = event.tenant
        else:
            tenant = str(conv.get("tenant", DEFAULT_TENANT)) if conv else DEFAULT_TENANT
        index = await self._get(index_key(tenant), pending)
        item = response = None
        if isinstance(event, ItemDeleted):
            item = await self._get(ref_key(event.conversation_id, event.item_id), pending)
        if isinstance(event, ResponseEvent):
            key = response_key(event.conversation_id, event.response_id)
            response = await self._get(key, pending)
        return State(
            ConversationView(**conv) if conv else None,
            IndexView(**index) if index else IndexView(),
            ItemRef(**item) if item else None,
            ResponseView(**response) if response else None,
        )

    @staticmethod
    def _stage(change: Change, pending: dict[str, Any], purges: list[PurgePrefix]) -> None:
        if isinstance(change, Put):
            pending[change.key] = change.value
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

        last = [k for k in pending if is_index_key(k) or k == CHECKPOINT_KEY]
        commits = [k for k in pending if _is_conversation_key(k)]
        responses = [k for k in pending if _is_response_key(k)]
        data = [
            as_change(k)
            for k in pending
            if k not in commits and k not in last and k not in responses
        ]
        await self.views.write([*purges, *data])
        if responses:  # a response commits its input; a conversation commits its responses
            await self.views.write([as_change(k) for k in responses])
        await self.views.write([as_change(k) for k in commits])
        await self.views.write([as_change(k) for k in last])
        for key in (*responses, *commits, *last):
            self._remember(key, pending[key])

    def _remember(self, key: str, value: Any) -> None:
        self._cache[key] = None if value is _DELETED else value
        self._cache.move_to_end(key)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)


def _is_conversation_key(key: str) -> bool:
    return key.startswith("conv.") and key.count(".") == 1


def _is_response_key(key: str) -> bool:
    return key.startswith("resp.") and key.count(".") == 2
