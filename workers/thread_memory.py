"""What a model worker knows of a conversation right after it finished a response on it.

A conversation's next turn usually comes straight after the last one's outcome, and the
model worker that appended that outcome knew the whole conversation then: the view and
items it read for the claim, and every event on the thread since (the request, its claim
and its outcome, when each was appended on the head the one before left). Folding those
with the projection's own fold gives the conversation as of the outcome, so a request
accepted on exactly that head (its `context_seq`) needs no read of the views, which the
projector may not even have written yet. Anything else on the thread in between changes
the head and the request's `context_seq`, and the views are read as before.
"""

from collections import OrderedDict
from typing import Any

from events import codec
from events.schema import EventBase
from projections.fold import Folder
from projections.store import MemoryViews
from projections.views import ConversationView, conversation_key, item_key

SIZE = 256  # conversations remembered per worker process
BUDGET = 32 * 1024 * 1024  # bytes of items (as JSON) remembered per worker process

Known = tuple[ConversationView, list[dict[str, Any]]]


class Held(list[dict[str, Any]]):
    """A conversation's items as this memory holds and hands them out (a list, which
    nobody changes), with their size as JSON."""

    size: int = 0


def _size(items: list[dict[str, Any]]) -> int:
    """The items' size as JSON (a sum of two lists' sizes is a byte or so more)."""
    return len(codec.dumps(items))


class ThreadMemory:
    """The last few conversations this worker finished a response on, each as of the
    log position of that response's outcome, within SIZE conversations and BUDGET bytes."""

    def __init__(self, size: int = SIZE, budget: int = BUDGET) -> None:
        self.size = size
        self.budget = budget
        self.bytes = 0
        # conversation id -> (the view, its live items, their size as JSON)
        self._known: OrderedDict[str, tuple[ConversationView, list[dict[str, Any]], int]] = (
            OrderedDict()
        )

    def get(self, conversation_id: str, seq: int) -> Known | None:
        """The conversation and its live items as of log position `seq` exactly, if known."""
        known = self._known.pop(conversation_id, None)  # used once: the next turn moves it
        if known is None:
            return None
        self.bytes -= known[2]
        return (known[0], known[1]) if known[0].last_seq == seq else None

    async def remember(
        self,
        conv: ConversationView,
        items: list[dict[str, Any]],
        events: list[EventBase],
    ) -> None:
        """`conv` and `items` as they were just before `events` (with their `seq`), which
        are every event on the thread after `conv.last_seq`."""
        old = self._known.pop(conv.id, None)
        if old is not None:
            self.bytes -= old[2]
        views = MemoryViews()
        views.data[conversation_key(conv.id)] = conv.model_dump()
        await Folder(views, cache_size=0).fold(list(events))  # type: ignore[arg-type]
        raw = views.data.get(conversation_key(conv.id))
        if raw is None:
            return
        after = ConversationView(**raw)
        if after.deleted or after.last_seq != events[-1].seq:
            return
        keys = (item_key(conv.id, pos) for pos in range(conv.next_item_pos, after.next_item_pos))
        new = [views.data[key] for key in keys if key in views.data]
        # Items this memory handed out carry their size: only the new ones are measured,
        # not the whole conversation again every turn.
        size = (items.size if isinstance(items, Held) else _size(items)) + _size(new)
        if size > self.budget // 4:
            return  # a huge conversation is read each turn rather than held
        held = Held([*items, *new])
        held.size = size
        self._known[conv.id] = (after, held, size)
        self.bytes += size
        while len(self._known) > self.size or self.bytes > self.budget:
            _, (_, _, dropped) = self._known.popitem(last=False)
            self.bytes -= dropped
