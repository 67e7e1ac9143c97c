"""Pure fold of events into views: `apply(state, event) -> (state, changes)`.

No I/O here. The worker loads the `State` an event touches, calls `apply`, and
writes the returned changes; `MemoryViews` does the same in a dict, which is how
point-in-time reads and tests get exactly the views the live projection builds.

Redelivery is harmless: an event at or below the conversation's `last_seq` changes
nothing, and positions derive from counters that move only when the view that
holds them is written, after the data it points at.
"""

from dataclasses import dataclass
from typing import Any, NamedTuple

from pydantic import BaseModel

from events.schema import (
    RESPONSE_TERMINAL,
    ConversationCreated,
    ConversationDeleted,
    ConversationPurged,
    Event,
    ItemAdded,
    ItemDeleted,
    MetadataReplaced,
    ResponseDeleted,
    ResponseEvent,
    ResponseRequested,
    Unrecognized,
)
from projections.responses import apply_response
from projections.views import (
    ConversationView,
    IndexEntry,
    IndexView,
    ItemRef,
    ResponseView,
    conversation_children,
    conversation_key,
    index_entry_key,
    index_key,
    item_key,
    ref_key,
    thread_responses,
)


class Put:
    """Write a view under `key`, given as its dict or as its model (`view`).

    A model is dumped only when a dict is asked for (`value`): a KV store serialises the
    model itself, and a fold that writes one conversation view per event of a batch
    stores only the last of them, so most are never dumped at all.
    """

    __slots__ = ("key", "view")

    def __init__(self, key: str, view: dict[str, Any] | BaseModel) -> None:
        self.key = key
        self.view = view

    @property
    def value(self) -> dict[str, Any]:
        view = self.view
        return view.model_dump() if isinstance(view, BaseModel) else view

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Put):
            return NotImplemented
        return self.key == other.key and self.value == other.value

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Put({self.key!r}, {self.value!r})"


@dataclass(frozen=True)
class Delete:
    key: str


@dataclass(frozen=True)
class PurgePrefix:
    """Remove every key that starts with `prefix`."""

    prefix: str


Change = Put | Delete | PurgePrefix


class State(NamedTuple):
    """The views one event may read: its conversation, its tenant's conversation index (for
    a ConversationCreated, the index of the tenant it names), and a named item. (A tuple:
    built twice per event, a frozen dataclass cost a microsecond each time.)"""

    conversation: ConversationView | None
    index: IndexView
    item: ItemRef | None = None
    response: ResponseView | None = None


def _put_conversation(view: ConversationView) -> Put:
    return Put(conversation_key(view.id), view)


def apply(state: State, event: Event | Unrecognized) -> tuple[State, list[Change]]:
    """Fold one event. Changes are ordered: data first, then the views that commit it."""
    if isinstance(event, ResponseEvent):
        return _apply_response_event(state, event)
    conv = state.conversation
    if conv is not None and event.seq <= conv.last_seq:
        if isinstance(event, ConversationCreated) and state.index.count <= conv.position:
            # The index counter is written last; finish what a crash interrupted.
            index = IndexView(count=conv.position + 1, last_seq=event.seq)
            return state._replace(index=index), [Put(index_key(conv.tenant), index)]
        return state, []
    if isinstance(event, ConversationCreated):
        if conv is not None:
            return state, []
        pos = state.index.count
        conv = ConversationView(
            id=event.conversation_id,
            created_at=event.created_at,
            metadata=event.metadata,
            last_seq=event.seq,
            position=pos,
            tenant=event.tenant,
        )
        index = IndexView(count=pos + 1, last_seq=event.seq)
        changes: list[Change] = [
            Put(index_entry_key(conv.tenant, pos), IndexEntry(id=conv.id)),
            _put_conversation(conv),
            Put(index_key(conv.tenant), index),
        ]
        return State(conv, index), changes
    if conv is None:
        if isinstance(event, ConversationPurged):  # a response's own thread, erased
            return state, [PurgePrefix(thread_responses(event.conversation_id))]
        return state, []  # an event for a conversation this view never saw created
    if isinstance(event, Unrecognized):
        conv = conv.model_copy(update={"last_seq": event.seq})
        return state._replace(conversation=conv), [_put_conversation(conv)]
    if isinstance(event, ConversationPurged):
        # Erased: no view of it stays behind (only the record in the log).
        changes: list[Change] = [
            PurgePrefix(conversation_children(conv.id)),
            PurgePrefix(thread_responses(conv.id)),
            Delete(index_entry_key(conv.tenant, conv.position)),
            Delete(conversation_key(conv.id)),
        ]
        return state._replace(conversation=None, item=None), changes
    if conv.deleted:
        conv = conv.model_copy(update={"last_seq": event.seq})
        return state._replace(conversation=conv), [_put_conversation(conv)]
    changes = []
    item = state.item
    update: dict[str, Any] = {}  # one copy of the conversation view per event
    if isinstance(event, ItemAdded):
        pos = conv.next_item_pos
        item = ItemRef(pos=pos)
        changes += [
            Put(item_key(conv.id, pos), event.item),
            Put(ref_key(conv.id, event.item["id"]), item),
        ]
        update["next_item_pos"] = pos + 1
    elif isinstance(event, ItemDeleted):
        if item is not None:
            # Also when the ref already says deleted: a crash may have written the ref
            # but not removed the item, and deleting twice is harmless.
            item = ItemRef(pos=item.pos, deleted=True)
            changes += [
                Delete(item_key(conv.id, item.pos)),
                Put(ref_key(conv.id, event.item_id), item),
            ]
    elif isinstance(event, MetadataReplaced):
        update["metadata"] = event.metadata
    elif isinstance(event, ConversationDeleted):
        update["deleted"] = True
        changes += [
            PurgePrefix(conversation_children(conv.id)),
            Delete(index_entry_key(conv.tenant, conv.position)),
        ]
    update["last_seq"] = event.seq
    conv = conv.model_copy(update=update)
    changes.append(_put_conversation(conv))
    return State(conv, state.index, item), changes


def _apply_response_event(state: State, event: ResponseEvent) -> tuple[State, list[Change]]:
    """The response's view, and on a conversation its queue of pending responses."""
    response, writes = apply_response(state.response, event)
    changes: list[Change] = [Put(k, v) if v is not None else Delete(k) for k, v in writes]
    state = state._replace(response=response)
    conv = state.conversation
    if conv is None or event.seq <= conv.last_seq:
        return state, changes
    pending = conv.pending_responses
    if isinstance(event, ResponseRequested):
        if event.response_id not in pending:
            pending = [*pending, event.response_id]
    elif event.type in RESPONSE_TERMINAL or isinstance(event, ResponseDeleted):
        pending = [p for p in pending if p != event.response_id]
    conv = conv.model_copy(update={"pending_responses": pending, "last_seq": event.seq})
    changes.append(_put_conversation(conv))
    return state._replace(conversation=conv), changes
