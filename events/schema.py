"""Event schemas (schema version 1).

Every event is an envelope (id, type, conversation, time, actor, schema version)
plus the fields of its type. Events are immutable facts: never edit a field's
meaning, add a new type or bump `schema_version` instead.
"""

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from events.ids import new_id

SCHEMA_VERSION = 1
# The tenant of everything written before tenants existed, and of open development mode.
DEFAULT_TENANT = "default"


def utc_now() -> datetime:
    return datetime.now(UTC)


class Actor(BaseModel):
    """Who caused an event: an API key's non-secret id (kind `api_key`) and its tenant, or
    `anonymous` in open mode. `tenant` is null for system actors and for older events."""

    model_config = ConfigDict(frozen=True)

    id: str = "anonymous"
    kind: Literal["anonymous", "api_key", "system", "worker"] = "anonymous"
    ip: str | None = None
    tenant: str | None = None


class EventBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str = Field(default_factory=lambda: new_id("evt"))
    # The thread the event belongs to (its subject `conv.<id>.<type>`): a conversation,
    # or, for a response created without one, that response (`resp_...`).
    conversation_id: str
    time: datetime = Field(default_factory=utc_now)
    schema_version: int = SCHEMA_VERSION
    actor: Actor = Actor()
    # Tamper evidence (events/chain.py): set when appended, never by the caller.
    prev_hash: str = ""
    hash: str = ""
    # Stream sequence: assigned by JetStream, filled in when read back, never stored.
    seq: int = Field(default=0, exclude=True)


class ConversationCreated(EventBase):
    type: Literal["ConversationCreated"] = "ConversationCreated"
    created_at: int
    metadata: dict[str, str] = {}
    # The owner: the conversation, its items and its events belong to this tenant. Events
    # from before tenants existed have none and belong to DEFAULT_TENANT.
    tenant: str = DEFAULT_TENANT


class ItemAdded(EventBase):
    type: Literal["ItemAdded"] = "ItemAdded"
    item: dict[str, Any]
    response_id: str | None = None
    # The stored item this one is a copy of (an `item_reference` resolved), for audit.
    copied_from: str | None = None


class MetadataReplaced(EventBase):
    type: Literal["MetadataReplaced"] = "MetadataReplaced"
    metadata: dict[str, str]


class ItemDeleted(EventBase):
    type: Literal["ItemDeleted"] = "ItemDeleted"
    item_id: str


class ConversationDeleted(EventBase):
    type: Literal["ConversationDeleted"] = "ConversationDeleted"


class ConversationPurged(EventBase):
    """What is left after an erasure request: that it happened, by whom, how much.

    It holds nothing of what was said, and starts a new hash chain (the old one is gone).
    """

    type: Literal["ConversationPurged"] = "ConversationPurged"
    purged_events: int
    reason: str | None = None


class ResponseEvent(EventBase):
    """An event of a response's life, on its thread (see events/ids.py new_response_id)."""

    response_id: str


class ResponseRequested(ResponseEvent):
    """Everything needed to make (or redo) the model call, as the client asked for it."""

    type: Literal["ResponseRequested"] = "ResponseRequested"
    created_at: int
    model: str
    instructions: str | None = None
    input: list[dict[str, Any]]  # normalised items, with ids
    # Input item id -> the stored item it is a copy of (its `item_reference`), for audit.
    copied_from: dict[str, str] = {}
    previous_response_id: str | None = None
    background: bool = False
    store: bool = True
    stream: bool = False
    metadata: dict[str, str] = {}
    # Sampling and tool settings, stored as sent: temperature, top_p, max_output_tokens,
    # tools, tool_choice, parallel_tool_calls, text, truncation, user.
    params: dict[str, Any] = {}
    context_seq: int = 0  # the thread's last sequence when the request was accepted
    # The owner (a conversation's responses are its tenant's; older events: the default).
    tenant: str = DEFAULT_TENANT


class ResponseInProgress(ResponseEvent):
    """A worker took the response; the context is the thread's log up to `context_seq`."""

    type: Literal["ResponseInProgress"] = "ResponseInProgress"
    attempt: int
    worker: str
    context_seq: int


class ResponseCompleted(ResponseEvent):
    """The model's output. On a conversation, the same batch adds the input and output
    items to it (ItemAdded with this response's id)."""

    type: Literal["ResponseCompleted"] = "ResponseCompleted"
    status: Literal["completed", "incomplete"] = "completed"
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    completed_at: int


class ResponseFailed(ResponseEvent):
    type: Literal["ResponseFailed"] = "ResponseFailed"
    error: dict[str, Any]  # OpenAI's ResponseError: {code, message}


class ResponseCancelled(ResponseEvent):
    type: Literal["ResponseCancelled"] = "ResponseCancelled"


class ResponseDeleted(ResponseEvent):
    """The response is no longer served (the conversation's items stay, as OpenAI does)."""

    type: Literal["ResponseDeleted"] = "ResponseDeleted"


RESPONSE_TERMINAL = frozenset({"ResponseCompleted", "ResponseFailed", "ResponseCancelled"})

Event = Annotated[
    ConversationCreated
    | ItemAdded
    | MetadataReplaced
    | ItemDeleted
    | ConversationDeleted
    | ConversationPurged
    | ResponseRequested
    | ResponseInProgress
    | ResponseCompleted
    | ResponseFailed
    | ResponseCancelled
    | ResponseDeleted,
    Field(discriminator="type"),
]
EVENT_TYPES: tuple[str, ...] = (
    "ConversationCreated",
    "ItemAdded",
    "MetadataReplaced",
    "ItemDeleted",
    "ConversationDeleted",
    "ConversationPurged",
    "ResponseRequested",
    "ResponseInProgress",
    "ResponseCompleted",
    "ResponseFailed",
    "ResponseCancelled",
    "ResponseDeleted",
)
_EVENT = TypeAdapter(Event)


def decode(data: bytes, seq: int = 0) -> Event:
    """Parse a stored event; `seq` is the stream sequence it was read at."""
    event = _EVENT.validate_json(data)
    if seq:
        # The event was just built here and nobody holds it yet: set the excluded `seq`
        # in place rather than copying the whole frozen model (a copy per event on replay).
        event.__dict__["seq"] = seq
    return event


class Unrecognized(EventBase):
    """A message on a conversation's subject that this version cannot read (a newer event
    type, or damage). Never stored: readers fold it as a no-op that still marks its
    position applied, so one unknown event does not stall the conversation's reads."""

    type: Literal["Unrecognized"] = "Unrecognized"


def decode_lenient(data: bytes, seq: int, subject: str) -> Event | Unrecognized:
    """`decode`, or an Unrecognized event of the conversation named by the subject."""
    try:
        return decode(data, seq)
    except ValidationError:
        parts = subject.split(".")
        conversation_id = parts[1] if len(parts) > 2 else ""
        return Unrecognized(conversation_id=conversation_id, seq=seq)
