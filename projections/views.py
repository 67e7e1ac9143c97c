"""View records and the KV keys they live under.

Layout (one bucket):
  conv.<id>                   ConversationView: the conversation, and how far it is applied
  conv.<id>.item.<pos>        an item, by its position in the conversation (dense, from 0)
  conv.<id>.ref.<item_id>     ItemRef: item id -> position, for `after` and retrieve
  index                       IndexView: how many conversations were ever created
  index.<pos>                 IndexEntry: the conversation created at that position
  checkpoint                  {"seq": n}: the projection has applied the log up to n
Positions are dense counters kept in the parent view, so a page of `limit` items or
conversations is `limit` key lookups whatever the length of the whole.
"""

from pydantic import BaseModel, ConfigDict

POS_WIDTH = 12


class ConversationView(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    created_at: int
    metadata: dict[str, str] = {}
    deleted: bool = False
    last_seq: int  # stream sequence of the last event of this conversation applied
    next_item_pos: int = 0
    position: int  # in the global conversation index

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


INDEX_KEY = "index"
CHECKPOINT_KEY = "checkpoint"  # {"seq": n}: every event up to n is applied


def index_entry_key(pos: int) -> str:
    return f"index.{pos:0{POS_WIDTH}d}"
