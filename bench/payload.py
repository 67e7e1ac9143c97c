"""What the workloads send: one chat message of a realistic size, as the API receives it
and as the log stores it, so raw publishes and appends move the same bytes."""

import json
import time
from typing import Any

from events.chain import GENESIS, seal
from events.ids import new_id, new_response_id
from events.schema import ItemAdded, ResponseCompleted, ResponseRequested

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


def response_input() -> str:
    """What a response workload asks: the same short chat turn as an appended item."""
    return TEXT.strip()


def echo_words(context_messages: int = 1) -> list[str]:
    """The words the echo provider streams back for `response_input()`: one delta each."""
    return f"echo: {response_input()} (context: {context_messages} messages)".split(" ")


def response_request_bytes() -> bytes:
    """A sealed ResponseRequested for `response_input()`, as the API appends it."""
    conversation_id = new_id("conv")
    item = {**stored_item(), "content": [{"type": "input_text", "text": response_input()}]}
    event = ResponseRequested(
        conversation_id=conversation_id,
        response_id=new_response_id(conversation_id),
        created_at=int(time.time()),
        model="bench",
        input=[item],
        stream=True,
    )
    return seal(event, GENESIS)[1]


def response_delta_bytes(word: str, sequence_number: int) -> bytes:
    """One `response.output_text.delta` streaming event, as the worker publishes it."""
    event = {
        "type": "response.output_text.delta",
        "sequence_number": sequence_number,
        "item_id": new_id("msg"),
        "output_index": 0,
        "content_index": 0,
        "delta": f" {word}",
        "logprobs": [],
    }
    return json.dumps(event, separators=(",", ":")).encode()


def response_outcome_bytes() -> bytes:
    """A sealed ResponseCompleted with the echoed answer: the outcome a worker appends."""
    conversation_id = new_id("conv")
    text = " ".join(echo_words())
    output = {
        **stored_item(),
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
    }
    event = ResponseCompleted(
        conversation_id=conversation_id,
        response_id=new_response_id(conversation_id),
        output=[output],
        completed_at=int(time.time()),
    )
    return seal(event, GENESIS)[1]
