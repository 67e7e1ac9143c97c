"""What the workloads send: one chat message of a realistic size, as the API receives it
and as the log stores it, so raw publishes and appends move the same bytes."""

import time
from typing import Any

from events.chain import GENESIS, seal
from events.ids import new_id
from events.schema import ItemAdded

TEXT = (
    "Benchmark message: the quick brown fox jumps over the lazy dog while the log "
    "keeps every event and the views are folded from it. "
) * 2  # ~250 characters, a short chat turn


def http_item() -> dict[str, Any]:
    """One item as a client posts it."""
    return {"type": "message", "role": "user", "content": [{"type": "input_text", "text": TEXT}]}


def stored_item() -> dict[str, Any]:
    """The same item as the API stores it (normalised, with id and created_at)."""
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": TEXT}],
        "created_at": int(time.time()),
    }


def raw_event_bytes() -> bytes:
    """A sealed ItemAdded exactly as appended: the raw baseline publishes these bytes."""
    event = ItemAdded(conversation_id=new_id("conv"), item=stored_item())
    return seal(event, GENESIS)[1]
