"""The model worker's memory of conversations: exact positions only, bounded in bytes."""

from events.schema import ItemAdded, MetadataReplaced
from projections.views import ConversationView
from workers.thread_memory import ThreadMemory


def view(conv: str, seq: int) -> ConversationView:
    return ConversationView(id=conv, created_at=1, last_seq=seq, position=0)


def added(conv: str, seq: int, text: str) -> ItemAdded:
    item = {"id": f"msg_{seq}", "type": "message", "role": "user", "content": text}
    return ItemAdded(conversation_id=conv, item=item, seq=seq)


async def test_only_the_exact_position_is_served_and_only_once():
    memory = ThreadMemory()
    await memory.remember(view("conv_a", 3), [], [added("conv_a", 7, "hi")])
    assert memory.get("conv_a", 6) is None  # another position: not served, and dropped
    assert memory.get("conv_a", 7) is None
    await memory.remember(view("conv_a", 3), [], [added("conv_a", 7, "hi")])
    known = memory.get("conv_a", 7)
    assert known is not None
    conv, items = known
    assert (conv.last_seq, conv.next_item_pos, [i["id"] for i in items]) == (7, 1, ["msg_7"])
    assert memory.get("conv_a", 7) is None and memory.bytes == 0


async def test_events_after_the_view_are_folded_in_order():
    memory = ThreadMemory()
    first = {"id": "msg_1", "type": "message", "role": "user", "content": "old"}
    start = view("conv_a", 4).model_copy(update={"next_item_pos": 1})
    events = [
        MetadataReplaced(conversation_id="conv_a", metadata={"k": "v"}, seq=5),
        added("conv_a", 6, "new"),
    ]
    await memory.remember(start, [first], events)
    known = memory.get("conv_a", 6)
    assert known is not None
    conv, items = known
    assert conv.metadata == {"k": "v"} and conv.next_item_pos == 2
    assert [i["id"] for i in items] == ["msg_1", "msg_6"]


async def test_the_byte_budget_evicts_the_oldest_and_skips_huge_conversations():
    memory = ThreadMemory(budget=1600)  # a conversation of ~380 bytes fits 4 times
    for n in range(5):
        await memory.remember(view(f"conv_{n}", 1), [], [added(f"conv_{n}", 2, "x" * 300)])
    assert 0 < memory.bytes <= 1600
    assert memory.get("conv_0", 2) is None  # the oldest went
    assert memory.get("conv_4", 2) is not None
    await memory.remember(view("conv_big", 1), [], [added("conv_big", 2, "x" * 500)])
    assert memory.get("conv_big", 2) is None  # over a quarter of the budget: not held
    before = memory.bytes
    await memory.remember(view("conv_3", 2), [], [added("conv_3", 3, "y")])  # replaces
    assert memory.bytes < before


async def test_the_next_turn_measures_only_its_new_items(monkeypatch):
    """A long conversation is not serialised whole every turn to count its bytes."""
    import workers.thread_memory as thread_memory

    memory = ThreadMemory()
    old = [
        {"id": f"msg_{n}", "type": "message", "role": "user", "content": "x" * 100}
        for n in range(200)
    ]
    start = view("conv_a", 300).model_copy(update={"next_item_pos": 200})
    await memory.remember(start, old, [added("conv_a", 301, "a")])
    first = memory.bytes
    known = memory.get("conv_a", 301)
    assert known is not None
    measured: list[int] = []
    dumps = thread_memory.codec.dumps

    def counted(value):  # type: ignore[no-untyped-def]
        out = dumps(value)
        measured.append(len(out))
        return out

    monkeypatch.setattr(thread_memory.codec, "dumps", counted)
    conv, items = known
    await memory.remember(conv, items, [added("conv_a", 302, "b")])
    assert sum(measured) < 200  # the one new item, not the 201 before it
    grown = memory.get("conv_a", 302)
    assert grown is not None and len(grown[1]) == 202
    assert memory.bytes == 0 and first > 200 * 100
