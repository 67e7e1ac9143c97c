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
MODEL_MEMO = 1_000  # views kept as models (a few batches of the same conversations)


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
        self._cache: OrderedDict[str, dict[str, Any] | None] = OrderedDict()
        # Views read from the store for the current batch, in one request (`_prefetch`).
        self._fetched: dict[str, dict[str, Any] | None] = {}
        # key -> (the dict a view was last written as, that view as a model): the next
        # event of the same view reuses the model instead of validating the dict again.
        self._models: dict[str, tuple[dict[str, Any], BaseModel]] = {}
        self.applied = 0

    async def fold(self, events: list[Event | Unrecognized]) -> None:
        pending: dict[str, Any] = {}
        purges: list[PurgePrefix] = []
        try:
            await self._prefetch(events)
            for event in events:
                state, keys = await self._state(event, pending)
                new, changes = apply(state, event)
                for change in changes:
                    self._stage(change, pending, purges)
                    if isinstance(change, Put):
                        self._memo(change, keys, new)
            if self.checkpointing:
                checkpoint = await self._get(CHECKPOINT_KEY, pending)
                if events and events[-1].seq > (checkpoint or {}).get("seq", 0):
                    # Never backwards: a late redelivery of old events must not hide newer.
                    pending[CHECKPOINT_KEY] = {"seq": events[-1].seq}
            await self._flush(pending, purges)
        except BaseException:
            self._cache.clear()
            self._models.clear()
            raise
        finally:
            self._fetched = {}
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

    async def _state(
        self, event: Event | Unrecognized, pending: dict[str, Any]
    ) -> tuple[State, tuple[str, str, str | None, str | None]]:
        """The views `event` reads, and their keys (conversation, index, ref, response)."""
        conv_key = conversation_key(event.conversation_id)
        conv = await self._get(conv_key, pending)
        if isinstance(event, ConversationCreated):
            tenant = event.tenant
        else:
            tenant = str(conv.get("tenant", DEFAULT_TENANT)) if conv else DEFAULT_TENANT
        idx_key = index_key(tenant)
        # Only a ConversationCreated reads or moves its tenant's index (`apply`).
        created = isinstance(event, ConversationCreated)
        index = await self._get(idx_key, pending) if created else None
        item = response = None
        item_ref = resp_key = None
        if isinstance(event, ItemDeleted):
            item_ref = ref_key(event.conversation_id, event.item_id)
            item = await self._get(item_ref, pending)
        if isinstance(event, ResponseEvent):
            resp_key = response_key(event.conversation_id, event.response_id)
            response = await self._get(resp_key, pending)
        state = State(
            self._model(conv_key, conv, ConversationView),
            self._model(idx_key, index, IndexView) or IndexView(),
            self._model(item_ref, item, ItemRef),
            self._model(resp_key, response, ResponseView),
        )
        return state, (conv_key, idx_key, item_ref, resp_key)

    def _model(self, key: str | None, value: dict[str, Any] | None, cls: type[Any]) -> Any:
        if value is None or key is None:
            return None
        known = self._models.get(key)
        if known is not None and known[0] is value:
            return known[1]
        return cls(**value)

    def _memo(self, put: Put, keys: tuple[str, str, str | None, str | None], new: State) -> None:
        """Remember the model `apply` returned for a view it wrote (its state after the
        event, which is what the written dict was dumped from)."""
        model: BaseModel | None = None
        if put.key == keys[0]:
            model = new.conversation
        elif put.key == keys[1]:
            model = new.index
        elif put.key == keys[2]:
            model = new.item
        elif put.key == keys[3]:
            model = new.response
        if model is not None:
            if len(self._models) >= MODEL_MEMO:
                self._models.clear()
            self._models[put.key] = (put.value, model)

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
