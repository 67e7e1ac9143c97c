"""View records and the KV keys they live under.

Layout (one bucket):
  conv.<id>                   ConversationView: the conversation, and how far it is applied
  conv.<id>.item.<pos>        an item, by its position in the conversation (dense, from 0)
  conv.<id>.ref.<item_id>     ItemRef: item id -> position, for `after` and retrieve
  index.<tenant>              IndexView: how many conversations the tenant ever created
  index.<tenant>.<pos>        IndexEntry: the tenant's conversation created at that position
  checkpoint                  {"seq": n}: the projection has applied the log up to n
Positions are dense counters kept in the parent view, so a page of `limit` items or
conversations is `limit` key lookups whatever the length of the whole. The conversation
index is per tenant, so listing one tenant's conversations never reads another's.
"""

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
    return f"conv.{conversation_id}.item.{pos:0{POS_WIDTH}d}"


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
