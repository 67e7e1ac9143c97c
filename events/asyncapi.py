"""AsyncAPI document of the event stream, for services that subscribe on NATS directly.

Generated with FastStream's AsyncAPI support from a NatsBroker that is never
connected: one documented publisher per event type of the `Event` union, on
`conv.{conversation_id}.<type token>`. FastStream 0.7 cannot express channel
parameters or message headers and lists `exclude=True` fields in payloads, so
`asyncapi_schema` fixes those up in the generated document.
"""

import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any, get_args

from faststream.nats import NatsBroker
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from events.schema import Event
from events.subjects import STREAM_NAME, subject_token

TITLE = "convstore events"
PARAMETER = "conversation_id"

DESCRIPTION = f"""\
Every change to a conversation is one immutable event, appended to the JetStream stream
`{STREAM_NAME}` on the subject `conv.<conversation_id>.<event_type>` (event type in snake_case,
e.g. `conv.conv_abc.item_added`). The payload is the event as UTF-8 JSON.

**Headers.** `Nats-Msg-Id` is the event id (the payload's `id`); JetStream drops duplicates
within its dedupe window, and consumers should treat the id as the idempotency key, since
delivery is at least once. `Convstore-Event-Type` is the event type (`ItemAdded`), so a
consumer can route without parsing the body.

**Ordering.** Events of one conversation are stored in the order they happened: every append
is guarded by the conversation's last sequence, and a command producing several events
appends them as one atomic batch. The JetStream stream sequence (message metadata, not in
the payload) orders them; across conversations only the stream order holds.

**Subscribing.** Create a JetStream consumer on stream `{STREAM_NAME}` with a filter subject:
`conv.<conversation_id>.>` for the whole history of one conversation, `conv.*.item_added` for
every added item anywhere, `conv.>` for everything. Use a durable consumer with explicit acks
to resume where you left off. Do not use core NATS subscriptions: they also see publishes the
stream rejected (a failed concurrency guard or batch). Event types may be added, so ignore
types you do not know; a changed meaning gets a new type or a higher `schema_version`.
"""


def _event_models() -> list[type[BaseModel]]:
    """The models of the `Event` union, in declaration order."""
    union, *_ = get_args(Event)
    return list(get_args(union))


def _event_type(model: type[BaseModel]) -> str:
    return str(model.model_fields["type"].default)


def _channel_description(model: type[BaseModel]) -> str:
    event_type = _event_type(model)
    token = subject_token(event_type)
    return (
        f"`{event_type}` events of one conversation, on `conv.<conversation_id>.{token}`. "
        f"Headers: `Nats-Msg-Id` = event id (idempotency key), "
        f"`Convstore-Event-Type` = `{event_type}`. Ordered per conversation by stream "
        f"sequence. Subscribe with a JetStream consumer on stream `{STREAM_NAME}` filtered "
        f"by `conv.<conversation_id>.>` (one conversation, all types) or `conv.*.{token}` "
        f"(this type, all conversations)."
    )


def _broker() -> NatsBroker:
    """A NatsBroker that only carries the documentation; it is never connected."""
    broker = NatsBroker(
        description="The NATS server (cluster) convstore is configured with (CONVSTORE_NATS_URL).",
    )
    for model in _event_models():
        broker.publisher(
            f"conv.{{{PARAMETER}}}.{subject_token(_event_type(model))}",
            title=_event_type(model),
            description=_channel_description(model),
            schema=model,
        )
    return broker


def _headers(event_type: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "Nats-Msg-Id": {
                "type": "string",
                "description": "The event id (payload `id`): JetStream dedupe / idempotency key.",
            },
            "Convstore-Event-Type": {"type": "string", "const": event_type},
            "Convstore-Hash": {
                "type": "string",
                "description": "The payload's `hash` (sha256 chaining it to the previous event "
                "of its conversation through `prev_hash`).",
            },
            "Convstore-Tenant": {"type": "string", "description": "The owning tenant."},
            "Convstore-Conversation-Deleted": {
                "type": "string",
                "const": "1",
                "description": "Appended after the conversation was deleted (a running "
                "response's outcome): the conversation stays gone.",
            },
        },
        "required": ["Nats-Msg-Id", "Convstore-Event-Type", "Convstore-Hash"],
    }


def _drop_excluded(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Remove fields pydantic never serializes (`seq`) from the payload schema."""
    excluded = {name for name, field in model.model_fields.items() if field.exclude}
    for name in excluded:
        schema.get("properties", {}).pop(name, None)
    if "required" in schema:
        schema["required"] = [name for name in schema["required"] if name not in excluded]


def _ordered(mapping: dict[str, Any], first: list[str]) -> dict[str, Any]:
    keys = [k for k in first if k in mapping] + [k for k in mapping if k not in first]
    return {k: mapping[k] for k in keys}


def asyncapi_schema() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the event stream, as a JSON-compatible dict."""
    try:
        app_version = version("convstore")
    except PackageNotFoundError:
        app_version = "0.0.0"
    spec = AsyncAPI(
        _broker(), title=TITLE, version=app_version, description=DESCRIPTION, schema_version="3.0.0"
    ).to_specification()
    doc: dict[str, Any] = spec.to_jsonable()
    models = _event_models()
    types = [_event_type(m) for m in models]
    # FastStream keeps publishers in a WeakSet: restore declaration order.
    components = doc["components"]
    doc["channels"] = _ordered(doc["channels"], types)
    doc["operations"] = _ordered(doc["operations"], types)
    components["messages"] = _ordered(components["messages"], [f"{t}:Message" for t in types])
    components["schemas"] = schemas = _ordered(components["schemas"], [m.__name__ for m in models])
    for model, event_type in zip(models, types, strict=True):
        channel = doc["channels"][event_type]
        channel["parameters"] = {PARAMETER: {"description": "The conversation id (`conv_...`)."}}
        for ref in channel["messages"].values():
            message = components["messages"][ref["$ref"].rsplit("/", 1)[1]]
            message["headers"] = _headers(event_type)
            message.pop("correlationId", None)  # FastStream's default; convstore sets none
        _drop_excluded(schemas[model.__name__], model)
    return doc


def asyncapi_json() -> str:
    """`asyncapi_schema()` as a JSON string."""
    return json.dumps(asyncapi_schema(), indent=2, ensure_ascii=False)
