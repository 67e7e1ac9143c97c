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


Event = Annotated[
    ConversationCreated
    | ItemAdded
    | MetadataReplaced
    | ItemDeleted
    | ConversationDeleted
    | ConversationPurged,
    Field(discriminator="type"),
]
EVENT_TYPES: tuple[str, ...] = (
    "ConversationCreated",
    "ItemAdded",
    "MetadataReplaced",
    "ItemDeleted",
    "ConversationDeleted",
    "ConversationPurged",
)
_EVENT = TypeAdapter(Event)


def decode(data: bytes, seq: int = 0) -> Event:
    """Parse a stored event; `seq` is the stream sequence it was read at."""
    event = _EVENT.validate_json(data)
    return event.model_copy(update={"seq": seq}) if seq else event


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
