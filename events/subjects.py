"""Subject layout of the event stream.

One subject per conversation and event type: `conv.<conversation_id>.<event_type>`.
`conv.<id>.>` is the whole history of one conversation (the unit of optimistic
concurrency), `conv.*.item_added` every added item anywhere.
"""

import re

STREAM_NAME = "CONVSTORE"
STREAM_SUBJECTS = ["conv.>"]
ALL_EVENTS = "conv.>"

_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")
_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def subject_token(event_type: str) -> str:
    """`ItemAdded` -> `item_added`."""
    return _CAMEL.sub("_", event_type).lower()


def is_safe_id(value: str) -> bool:
    """True when `value` can stand as one subject token and KV key segment."""
    return bool(_SAFE_TOKEN.match(value))


def conversation_subject(conversation_id: str, event_type: str) -> str:
    return f"conv.{conversation_id}.{subject_token(event_type)}"


def conversation_filter(conversation_id: str) -> str:
    return f"conv.{conversation_id}.>"


# Streaming events of responses (OpenAI's SSE events, with their sequence_number), one
# subject per response, kept for a while so any API replica can serve or resume a stream.
RESPONSE_STREAM_NAME = "CONVSTORE_RESPONSE_STREAMS"
RESPONSE_STREAM_SUBJECTS = ["rstream.>"]
REQUESTS_FILTER = "conv.*.response_requested"  # the model workers' queue
MODEL_WORKERS = "model_workers"  # their shared durable consumer
# Every model worker answers requests here (core NATS, each one: `convstore status` lists
# them); "no responders" means no worker is running (api/queue_timeout.py).
WORKERS_ALIVE = "_CONVSTORE.workers.alive"


def response_stream_subject(response_id: str) -> str:
    return f"rstream.{response_id}"
