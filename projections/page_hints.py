"""Where a conversation's next page of items probably lies, so that a list reads its
items in the same request as the conversation view: one round trip instead of two.

A page's item keys follow from the view (its `next_item_pos`) or from the cursor's
position (its ref key), both read in that very request; guessing them beforehand
lets the request carry the items too. The guesses come from the pages this process
served: a conversation's last known length, and where each page's last item (the next
page's `after`) sits. A guess only decides which keys are read along: the page is
always walked from the view and ref read in the same point-in-time request, and a
wrong or missing guess costs the second round trip it would have cost anyway.
"""

from collections import OrderedDict
from typing import TypeVar

from projections.reader import Order, Page
from projections.views import item_key, ref_key

# Keys read past the last known end of a newest-first page: items added since (a reply
# and the next question) still come in the same request.
NEWER = 2
# A newest-first page that had to step over deleted items to fill itself guesses as many
# positions next time, up to this many times limit + 1.
DEEPER = 4

K = TypeVar("K")
V = TypeVar("V")


class PageHints:
    """A bounded memory (LRU) of conversation lengths and cursor positions."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._length: OrderedDict[str, tuple[int, int]] = OrderedDict()
        self._cursor: OrderedDict[tuple[str, str], int] = OrderedDict()

    def keys(self, conversation_id: str, after: str | None, limit: int, order: Order) -> list[str]:
        """The keys worth reading with the view for this page: the cursor's ref, and the
        items of the guessed positions (limit + 1 of them: the extra one says has_more)."""
        if after is not None:
            pos = _get(self._cursor, (conversation_id, after))
            cursor = [ref_key(conversation_id, after)]
            if pos is None:
                return cursor
            start = pos + 1 if order == "asc" else pos - 1
            positions = _window(start, order, limit + 1)
            return cursor + [item_key(conversation_id, p) for p in positions]
        if order == "asc":
            positions = range(limit + 1)
        else:
            known = _get(self._length, conversation_id)
            if known is None:
                return []
            length, depth = known
            count = max(limit + 1, min(depth, DEEPER * (limit + 1)))
            positions = _window(length - 1 + NEWER, "desc", count + NEWER)
        return [item_key(conversation_id, p) for p in positions]

    def learn(
        self, conversation_id: str, length: int, page: Page, after: str | None, order: Order
    ) -> None:
        """After a page: the conversation's length (`next_item_pos`), where the page's last
        item sits (the cursor of the page after it) and, for a newest-first first page,
        how many positions from the end it walked (more than limit + 1 past deleted
        items)."""
        depth = (self._length.get(conversation_id) or (0, 0))[1]
        if after is None and order == "desc":
            depth = length - (page.more_pos if page.more_pos is not None else 0)
        _put(self._length, conversation_id, (length, depth), self.size)
        if page.last_pos is not None:
            _put(self._cursor, (conversation_id, page.data[-1]["id"]), page.last_pos, self.size)


def _window(start: int, order: Order, count: int) -> range:
    if order == "asc":
        return range(start, start + count)
    return range(start, max(-1, start - count), -1)


def _get(lru: "OrderedDict[K, V]", key: K) -> V | None:
    value = lru.get(key)
    if value is not None:
        lru.move_to_end(key)
    return value


def _put(lru: "OrderedDict[K, V]", key: K, value: V, size: int) -> None:
    lru[key] = value
    lru.move_to_end(key)
    if len(lru) > size:
        lru.popitem(last=False)
