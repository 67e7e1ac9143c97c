"""View records and the KV keys they live under.

Layout (one bucket):
  conv.<id>                   ConversationView: the conversation, and how far it is applied
  conv.<id>.item.<pos>        an item, by its position in the conversation (dense, from 0)
  conv.<id>.ref.<item_id>     ItemRef: item id -> position, for `after` and retrieve
  index.<tenant>              IndexView: how many conversations the tenant ever created
  index.<tenant>.<pos>        IndexEntry: the tenant's conversation created at that position
  checkpoint                  {"seq": n}: the projection has applied the log up to n
  resp.<thread>.<resp_id>        ResponseView: a response, under its thread (so erasing a
                                 conversation erases its responses with one prefix)
  resp.<thread>.<resp_id>.input  the response's input items
Positions are dense counters kept in the parent view, so a page of `limit` items or
conversations is `limit` key lookups whatever the length of the whole. The conversation
index is per tenant, so listing one tenant's conversations never reads another's.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict

from events.schema import DEFAULT_TENANT

POS_WIDTH = 12


class ConversationView(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    created_at: int
    metadata: dict[str, str] = {}
    deleted: bool = False
    last_seq: int  # stream sequence of the last event of this conversation applied
    next_item_pos: int = 0
    position: int  # in its tenant's conversation index
    tenant: str = DEFAULT_TENANT  # the owner (views built before tenants: the default)
    # Responses requested and not finished yet, oldest first: the model workers run a
    # conversation's responses one at a time, in this order.
    pending_responses: list[str] = []

    def public(self) -> dict[str, object]:
        """The OpenAI Conversation object."""
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": dict(self.metadata),
        }


class ItemRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    pos: int
    deleted: bool = False


class IndexView(BaseModel):
    model_config = ConfigDict(frozen=True)

    count: int = 0
    last_seq: int = 0


class IndexEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str


def conversation_key(conversation_id: str) -> str:
    return f"conv.{conversation_id}"


def conversation_children(conversation_id: str) -> str:
    """Prefix of every key that belongs to one conversation's items."""
    return f"conv.{conversation_id}."


def item_key(conversation_id: str, pos: int) -> str:
    return f"conv.{conversation_id}.item.{str(pos).zfill(POS_WIDTH)}"


def ref_key(conversation_id: str, item_id: str) -> str:
    return f"conv.{conversation_id}.ref.{item_id}"


CHECKPOINT_KEY = "checkpoint"  # {"seq": n}: every event up to n is applied


def index_key(tenant: str) -> str:
    """The tenant's index counter (tenant names are safe key tokens: api/keys.py)."""
    return f"index.{tenant}"


def index_entry_key(tenant: str, pos: int) -> str:
    return f"index.{tenant}.{pos:0{POS_WIDTH}d}"


def is_index_key(key: str) -> bool:
    """A tenant's index counter (written last in a batch, like the checkpoint)."""
    return key.startswith("index.") and key.count(".") == 1


RESPONSE_TERMINAL_STATUSES = frozenset({"completed", "incomplete", "failed", "cancelled"})


class ResponseView(BaseModel):
    """A response as OpenAI serves it, plus what the workers and readers need."""

    model_config = ConfigDict(frozen=True)

    id: str
    thread: str  # the conversation, or the response's own id
    tenant: str = DEFAULT_TENANT
    conversation_id: str | None
    created_at: int
    status: str = "queued"
    model: str
    instructions: str | None = None
    previous_response_id: str | None = None
    background: bool = False
    store: bool = True
    metadata: dict[str, str] = {}
    params: dict[str, Any] = {}
    output: list[dict[str, Any]] = []
    usage: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    incomplete_details: dict[str, Any] | None = None
    completed_at: int | None = None
    attempt: int = 0
    context_seq: int = 0
    request_seq: int = 0
    last_seq: int = 0

    @property
    def terminal(self) -> bool:
        return self.status in RESPONSE_TERMINAL_STATUSES

    def public(self) -> dict[str, Any]:
        """The OpenAI Response object."""
        p = self.params
        return {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "background": self.background,
            "completed_at": self.completed_at,
            "conversation": {"id": self.conversation_id} if self.conversation_id else None,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            "instructions": self.instructions,
            "max_output_tokens": p.get("max_output_tokens"),
            "max_tool_calls": p.get("max_tool_calls"),
            "metadata": dict(self.metadata),
            "model": self.model,
            "output": list(self.output),
            "parallel_tool_calls": p.get("parallel_tool_calls", True),
            "previous_response_id": self.previous_response_id,
            "prompt_cache_key": p.get("prompt_cache_key"),
            "reasoning": p.get("reasoning") or {"effort": None, "summary": None},
            "safety_identifier": p.get("safety_identifier"),
            "service_tier": "default",
            "store": self.store,
            "temperature": p.get("temperature", 1.0),
            "text": p.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": p.get("tool_choice", "auto"),
            "tools": p.get("tools", []),
            "top_logprobs": p.get("top_logprobs", 0),
            "top_p": p.get("top_p", 1.0),
            "truncation": p.get("truncation", "disabled"),
            "usage": self.usage,
            "user": p.get("user"),
        }


def response_key(thread: str, response_id: str) -> str:
    return f"resp.{thread}.{response_id}"


def response_input_key(thread: str, response_id: str) -> str:
    return f"resp.{thread}.{response_id}.input"


def thread_responses(thread: str) -> str:
    """Prefix of every response view of a thread."""
    return f"resp.{thread}."
