"""Views as they were at a log position or a time, folded from the log on demand
with the same apply functions the live projection uses."""

from datetime import datetime

from events.history import History
from events.schema import decode_lenient
from projections.fold import Folder
from projections.reader import ViewReader
from projections.store import MemoryViews

PAGE = 1000


async def reader_as_of(
    history: History, conversation_id: str, *, seq: int | None = None, time: datetime | None = None
) -> ViewReader:
    """A reader over one conversation's views folded up to `seq` and/or `time` (inclusive)."""
    views = MemoryViews()
    folder = Folder(views)
    after = 0
    while True:
        page, more = await history.page(conversation_id, after, PAGE)
        events = []
        for stored in page:
            event = decode_lenient(stored.data, stored.seq, stored.subject)
            if (seq is not None and stored.seq > seq) or (time is not None and event.time > time):
                more = False
                break
            events.append(event)
        await folder.fold(events)
        if not more or not page:
            return ViewReader(views)
        after = page[-1].seq
