"""The projection layer without a server: `apply`, `Folder` and `ViewReader` over MemoryViews."""

import random
from typing import Any

import pytest

from events.schema import (
    DEFAULT_TENANT,
    ConversationCreated,
    ConversationDeleted,
    ConversationPurged,
    Event,
    ItemAdded,
    ItemDeleted,
    MetadataReplaced,
    decode,
)
from projections.apply import Delete, PurgePrefix, Put, State, apply
from projections.fold import Folder
from projections.reader import CursorNotFound, ViewReader
from projections.store import MemoryViews
from projections.views import (
    CHECKPOINT_KEY,
    ConversationView,
    IndexView,
    ItemRef,
    conversation_children,
    conversation_key,
    index_key,
    item_key,
    ref_key,
)
from projections.views import index_entry_key as tenant_entry_key

INDEX_KEY = index_key(DEFAULT_TENANT)


def index_entry_key(pos: int, tenant: str = DEFAULT_TENANT) -> str:
    return tenant_entry_key(tenant, pos)


# --------------------------------------------------------------------------- helpers


def created(
    cid: str,
    seq: int,
    created_at: int = 1_700_000_000,
    tenant: str = DEFAULT_TENANT,
    **metadata: str,
) -> Event:
    return ConversationCreated(
        conversation_id=cid, created_at=created_at, metadata=metadata, seq=seq, tenant=tenant
    )


def msg(item_id: str, text: str = "hi") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": text}],
    }


def added(cid: str, item_id: str, seq: int) -> Event:
    return ItemAdded(conversation_id=cid, item=msg(item_id, f"text of {item_id}"), seq=seq)


def item_deleted(cid: str, item_id: str, seq: int) -> Event:
    return ItemDeleted(conversation_id=cid, item_id=item_id, seq=seq)


def replaced(cid: str, seq: int, **metadata: str) -> Event:
    return MetadataReplaced(conversation_id=cid, metadata=metadata, seq=seq)


def conv_deleted(cid: str, seq: int) -> Event:
    return ConversationDeleted(conversation_id=cid, seq=seq)


def view(cid: str = "conv_a", **kw: Any) -> ConversationView:
    fields: dict[str, Any] = {"created_at": 1_700_000_000, "last_seq": 10, "position": 0}
    fields.update(kw)
    return ConversationView(id=cid, **fields)


def conv_dict(
    cid: str,
    *,
    position: int,
    last_seq: int,
    next_item_pos: int = 0,
    metadata: dict[str, str] | None = None,
    deleted: bool = False,
    created_at: int = 1_700_000_000,
    tenant: str = DEFAULT_TENANT,
) -> dict[str, Any]:
    """A ConversationView as stored, spelled out by hand."""
    return {
        "id": cid,
        "created_at": created_at,
        "metadata": metadata or {},
        "deleted": deleted,
        "last_seq": last_seq,
        "next_item_pos": next_item_pos,
        "position": position,
        "tenant": tenant,
        "pending_responses": [],
    }


async def fold_all(events: list[Event], batches: list[int] | None = None, **kw: Any) -> MemoryViews:
    """Fold `events` into fresh MemoryViews, in batches of the given sizes (default: one)."""
    views = MemoryViews()
    folder = Folder(views, **kw)
    for batch in split(events, batches or [len(events)]):
        await folder.fold(batch)
    return views


def split(events: list[Event], sizes: list[int]) -> list[list[Event]]:
    out, i = [], 0
    for size in sizes:
        out.append(events[i : i + size])
        i += size
    assert i == len(events), "batch sizes must cover the log exactly"
    return out


def random_sizes(n: int, seed: int, low: int = 1, high: int = 40) -> list[int]:
    rng = random.Random(seed)
    sizes = []
    while n > 0:
        size = min(n, rng.randint(low, high))
        sizes.append(size)
        n -= size
    return sizes


# --------------------------------------------------------------------------- apply


def test_created_takes_the_next_index_position_and_advances_the_index():
    state = State(None, IndexView(count=3, last_seq=7))
    new, changes = apply(state, created("conv_a", 10, topic="x"))

    assert new.conversation == ConversationView(
        id="conv_a", created_at=1_700_000_000, metadata={"topic": "x"}, last_seq=10, position=3
    )
    assert new.index == IndexView(count=4, last_seq=10)
    # Data first (the index entry), then the view that commits it, the counter last.
    assert changes == [
        Put("index.default.000000000003", {"id": "conv_a"}),
        Put("conv.conv_a", conv_dict("conv_a", position=3, last_seq=10, metadata={"topic": "x"})),
        Put(INDEX_KEY, {"count": 4, "last_seq": 10}),
    ]


def test_created_on_an_empty_index_takes_position_zero():
    new, changes = apply(State(None, IndexView()), created("conv_a", 1))
    assert new.conversation is not None and new.conversation.position == 0
    assert new.index == IndexView(count=1, last_seq=1)
    assert Put(index_entry_key(0), {"id": "conv_a"}) in changes


def test_items_get_dense_positions_and_item_and_ref_keys():
    state = State(view("conv_a", last_seq=1), IndexView(count=1, last_seq=1))
    for pos, seq in enumerate((5, 6, 9)):
        item_id = f"msg_{pos}"
        state, changes = apply(state, added("conv_a", item_id, seq))
        assert changes == [
            Put(f"conv.conv_a.item.{pos:012d}", msg(item_id, f"text of {item_id}")),
            Put(f"conv.conv_a.ref.{item_id}", {"pos": pos, "deleted": False}),
            Put(
                "conv.conv_a",
                conv_dict("conv_a", position=0, last_seq=seq, next_item_pos=pos + 1),
            ),
        ]
        assert state.item == ItemRef(pos=pos)
    assert state.conversation is not None
    assert state.conversation.next_item_pos == 3
    assert state.conversation.last_seq == 9
    assert state.index == IndexView(count=1, last_seq=1)  # items never touch the index


def test_item_positions_continue_from_next_item_pos():
    state = State(view("conv_a", next_item_pos=41), IndexView(count=1))
    _, changes = apply(state, added("conv_a", "msg_x", 11))
    assert changes[0].key == item_key("conv_a", 41)
    assert changes[1] == Put(ref_key("conv_a", "msg_x"), {"pos": 41, "deleted": False})


def test_item_deleted_deletes_the_item_and_marks_the_ref():
    state = State(view("conv_a", next_item_pos=3), IndexView(count=1), ItemRef(pos=1))
    new, changes = apply(state, item_deleted("conv_a", "msg_1", 11))

    assert changes == [
        Delete("conv.conv_a.item.000000000001"),
        Put("conv.conv_a.ref.msg_1", {"pos": 1, "deleted": True}),
        Put("conv.conv_a", conv_dict("conv_a", position=0, last_seq=11, next_item_pos=3)),
    ]
    assert new.item == ItemRef(pos=1, deleted=True)
    assert new.conversation is not None and new.conversation.next_item_pos == 3


def test_deleting_an_unknown_item_changes_only_last_seq():
    before = view("conv_a", next_item_pos=3, metadata={"k": "v"})
    state = State(before, IndexView(count=1), None)
    new, changes = apply(state, item_deleted("conv_a", "msg_1", 11))

    expected = before.model_copy(update={"last_seq": 11})
    assert changes == [Put("conv.conv_a", expected.model_dump())]
    assert new.conversation == expected
    assert new.item is None


def test_deleting_an_already_deleted_item_deletes_its_key_again():
    """A crash may have marked the ref deleted without removing the item: redo both."""
    before = view("conv_a", next_item_pos=3, metadata={"k": "v"})
    ref = ItemRef(pos=1, deleted=True)
    new, changes = apply(
        State(before, IndexView(count=1), ref), item_deleted("conv_a", "msg_1", 11)
    )

    expected = before.model_copy(update={"last_seq": 11})
    assert changes == [
        Delete("conv.conv_a.item.000000000001"),
        Put("conv.conv_a.ref.msg_1", {"pos": 1, "deleted": True}),
        Put("conv.conv_a", expected.model_dump()),
    ]
    assert new.conversation == expected
    assert new.item == ref


def test_metadata_replaced_replaces_rather_than_merges():
    state = State(view("conv_a", metadata={"a": "1", "b": "2"}), IndexView(count=1))
    new, changes = apply(state, replaced("conv_a", 11, b="3", c="4"))
    assert new.conversation is not None
    assert new.conversation.metadata == {"b": "3", "c": "4"}
    assert changes == [
        Put(
            "conv.conv_a",
            conv_dict("conv_a", position=0, last_seq=11, metadata={"b": "3", "c": "4"}),
        )
    ]

    new, changes = apply(new, replaced("conv_a", 12))
    assert new.conversation is not None and new.conversation.metadata == {}
    assert changes[-1].value["metadata"] == {}


def test_conversation_deleted_marks_purges_children_and_drops_the_index_entry():
    state = State(view("conv_a", position=7, next_item_pos=2), IndexView(count=9, last_seq=8))
    new, changes = apply(state, conv_deleted("conv_a", 11))

    assert changes == [
        PurgePrefix("conv.conv_a."),
        Delete("index.default.000000000007"),
        Put(
            "conv.conv_a",
            conv_dict("conv_a", position=7, last_seq=11, next_item_pos=2, deleted=True),
        ),
    ]
    assert new.conversation is not None and new.conversation.deleted
    assert new.index == IndexView(count=9, last_seq=8)  # the counter never goes back


async def test_conversation_deleted_purges_only_its_own_keys():
    # "conv_a" is a string prefix of "conv_ab": the purge must not reach the other one.
    views = await fold_all(
        [
            created("conv_a", 1),
            created("conv_ab", 2),
            added("conv_a", "msg_1", 3),
            added("conv_ab", "msg_2", 4),
            conv_deleted("conv_a", 5),
        ]
    )
    assert not [k for k in views.data if k.startswith(conversation_children("conv_a"))]
    assert views.data[conversation_key("conv_a")]["deleted"] is True
    assert index_entry_key(0) not in views.data
    assert views.data[index_entry_key(1)] == {"id": "conv_ab"}
    assert views.data[item_key("conv_ab", 0)]["id"] == "msg_2"
    assert views.data[ref_key("conv_ab", "msg_2")] == {"pos": 0, "deleted": False}
    assert views.data[INDEX_KEY] == {"count": 2, "last_seq": 2}


@pytest.mark.parametrize(
    "event",
    [
        added("conv_zz", "msg_1", 50),
        item_deleted("conv_zz", "msg_1", 50),
        replaced("conv_zz", 50, a="b"),
        conv_deleted("conv_zz", 50),
    ],
    ids=lambda e: e.type,
)
def test_events_for_an_unknown_conversation_are_ignored(event):
    state = State(None, IndexView(count=2, last_seq=9))
    new, changes = apply(state, event)
    assert changes == []
    assert new == state


@pytest.mark.parametrize(
    "event",
    [
        added("conv_a", "msg_9", 10),
        item_deleted("conv_a", "msg_1", 10),
        replaced("conv_a", 10, a="b"),
        conv_deleted("conv_a", 10),
        created("conv_a", 10),
        added("conv_a", "msg_9", 3),
        item_deleted("conv_a", "msg_1", 3),
        replaced("conv_a", 3, a="b"),
        conv_deleted("conv_a", 3),
        created("conv_a", 3),
    ],
    ids=lambda e: f"{e.type}-seq{e.seq}",
)
@pytest.mark.parametrize("deleted", [False, True], ids=["live", "deleted"])
def test_redelivered_event_is_a_no_op(event, deleted):
    # The conversation has applied up to seq 10; its creation is committed (count > position).
    state = State(
        view("conv_a", last_seq=10, position=1, next_item_pos=2, deleted=deleted),
        IndexView(count=2, last_seq=5),
        ItemRef(pos=1),
    )
    new, changes = apply(state, event)
    assert changes == []
    assert new == state


def test_events_after_conversation_deleted_only_advance_last_seq():
    state = State(view("conv_a", deleted=True, next_item_pos=2), IndexView(count=1))
    for seq, event in enumerate(
        [added("conv_a", "msg_9", 0), replaced("conv_a", 0, a="b"), conv_deleted("conv_a", 0)],
        start=20,
    ):
        event = event.model_copy(update={"seq": seq})
        state, changes = apply(state, event)
        expected = view("conv_a", deleted=True, next_item_pos=2, last_seq=seq)
        assert changes == [Put("conv.conv_a", expected.model_dump())]


@pytest.mark.parametrize("count", [0, 3, 4], ids=["empty-index", "behind", "at-position"])
def test_created_redelivered_after_crash_repairs_the_index_counter(count):
    # The conversation view (position 4) was written, the index counter was not advanced.
    state = State(view("conv_a", last_seq=10, position=4), IndexView(count=count, last_seq=2))
    new, changes = apply(state, created("conv_a", 10))
    assert changes == [Put(INDEX_KEY, {"count": 5, "last_seq": 10})]
    assert new.index == IndexView(count=5, last_seq=10)
    assert new.conversation == state.conversation


def test_created_redelivered_with_committed_index_does_nothing():
    state = State(view("conv_a", last_seq=10, position=4), IndexView(count=5, last_seq=10))
    new, changes = apply(state, created("conv_a", 10))
    assert changes == []
    assert new == state


def test_a_second_creation_of_the_same_conversation_is_ignored():
    state = State(view("conv_a", last_seq=10, position=0), IndexView(count=1, last_seq=10))
    new, changes = apply(state, created("conv_a", 11))
    assert changes == []
    assert new == state


# --------------------------------------------------------------------------- the log


TENANTS = (DEFAULT_TENANT, "acme")


def make_log(seed: int, n: int = 200) -> list[Event]:
    """A seeded log of mixed events over several conversations, one of them deleted.

    Sequences rise with occasional gaps (undecodable messages are skipped). It also holds
    events the fold must ignore: deletes of unknown or deleted items, events for a
    conversation never created and for the deleted one after its deletion.
    """
    rng = random.Random(seed)
    log: list[Event] = []
    seq = 0
    convs: list[str] = []
    items: dict[str, list[str]] = {}
    doomed: str | None = None
    deleted = False

    def next_seq() -> int:
        nonlocal seq
        seq += rng.choice((1, 1, 1, 1, 2))
        return seq

    while len(log) < n:
        live = [c for c in convs if not (deleted and c == doomed)]
        roll = rng.random()
        if not convs or (roll < 0.08 and len(convs) < 7):
            cid = f"conv_{seed}_{len(convs)}"
            convs.append(cid)
            items[cid] = []
            meta = {f"k{i}": str(rng.randint(0, 9)) for i in range(rng.randint(0, 3))}
            tenant = TENANTS[len(convs) % len(TENANTS)]  # not drawn: keeps the rng's sequence
            log.append(
                created(cid, next_seq(), created_at=1_700_000_000 + seq, tenant=tenant, **meta)
            )
        elif roll < 0.55:
            cid = rng.choice(live)
            item_id = f"msg_{len(log)}"
            items[cid].append(item_id)
            log.append(added(cid, item_id, next_seq()))
        elif roll < 0.72:
            cid = rng.choice(live)
            # An item of this conversation (maybe deleted already) or one never added.
            choices = [*items[cid], "msg_never"]
            log.append(item_deleted(cid, rng.choice(choices), next_seq()))
        elif roll < 0.85:
            cid = rng.choice(live)
            meta = {f"k{i}": str(rng.randint(0, 9)) for i in range(rng.randint(0, 3))}
            log.append(replaced(cid, next_seq(), **meta))
        elif roll < 0.88:
            log.append(replaced("conv_unknown", next_seq(), a="b"))
        elif not deleted and len(log) > n // 3 and len(convs) >= 3 and roll < 0.93:
            doomed = max(convs[:-1], key=lambda c: len(items[c]))
            deleted = True
            log.append(conv_deleted(doomed, next_seq()))
        elif deleted and roll < 0.96:
            assert doomed is not None
            kind = rng.randrange(4)
            if kind == 0:
                log.append(added(doomed, f"msg_{len(log)}", next_seq()))
            elif kind == 1:
                log.append(
                    item_deleted(doomed, rng.choice([*items[doomed], "msg_never"]), next_seq())
                )
            elif kind == 2:
                log.append(replaced(doomed, next_seq(), late="yes"))
            else:
                log.append(conv_deleted(doomed, next_seq()))
    assert deleted, "the log should delete one conversation"
    return log


def reference_views(log: list[Event]) -> dict[str, dict[str, Any]]:
    """What the views must hold after `log`, computed naively from the documented layout."""
    convs: dict[str, dict[str, Any]] = {}
    items: dict[str, dict[int, dict[str, Any]]] = {}
    refs: dict[str, dict[str, dict[str, Any]]] = {}
    entries: dict[tuple[str, int], str] = {}  # (tenant, position) -> conversation
    indexes: dict[str, dict[str, int]] = {}  # per tenant
    for e in log:
        c = convs.get(e.conversation_id)
        if isinstance(e, ConversationCreated):
            if c is None:
                index = indexes.get(e.tenant)
                pos = index["count"] if index else 0
                convs[e.conversation_id] = conv_dict(
                    e.conversation_id,
                    position=pos,
                    last_seq=e.seq,
                    metadata=dict(e.metadata),
                    created_at=e.created_at,
                    tenant=e.tenant,
                )
                items[e.conversation_id], refs[e.conversation_id] = {}, {}
                entries[e.tenant, pos] = e.conversation_id
                indexes[e.tenant] = {"count": pos + 1, "last_seq": e.seq}
            continue
        if c is None:
            continue
        c["last_seq"] = e.seq
        if c["deleted"]:
            continue
        cid = e.conversation_id
        if isinstance(e, ItemAdded):
            items[cid][c["next_item_pos"]] = e.item
            refs[cid][e.item["id"]] = {"pos": c["next_item_pos"], "deleted": False}
            c["next_item_pos"] += 1
        elif isinstance(e, ItemDeleted):
            ref = refs[cid].get(e.item_id)
            if ref and not ref["deleted"]:
                del items[cid][ref["pos"]]
                refs[cid][e.item_id] = {"pos": ref["pos"], "deleted": True}
        elif isinstance(e, MetadataReplaced):
            c["metadata"] = dict(e.metadata)
        elif isinstance(e, ConversationDeleted):
            c["deleted"] = True
            items[cid], refs[cid] = {}, {}
            del entries[c["tenant"], c["position"]]
    out: dict[str, dict[str, Any]] = {}
    for cid, c in convs.items():
        out[conversation_key(cid)] = c
        out.update({item_key(cid, p): v for p, v in items[cid].items()})
        out.update({ref_key(cid, i): r for i, r in refs[cid].items()})
    out.update({index_entry_key(p, t): {"id": cid} for (t, p), cid in entries.items()})
    out.update({index_key(t): index for t, index in indexes.items()})
    if log:
        out[CHECKPOINT_KEY] = {"seq": log[-1].seq}
    return out


SEEDS = [1, 2, 3]


@pytest.mark.parametrize("seed", SEEDS)
def test_the_generated_log_exercises_every_case(seed):
    log = make_log(seed)
    assert len(log) == 200
    expected = reference_views(log)
    types = {e.type for e in log}
    assert types == {
        "ConversationCreated",
        "ItemAdded",
        "ItemDeleted",
        "MetadataReplaced",
        "ConversationDeleted",
    }
    deleted = [v for k, v in expected.items() if k.count(".") == 1 and v.get("deleted")]
    assert len(deleted) == 1
    assert any(v["deleted"] for k, v in expected.items() if ".ref." in k)
    assert sum(1 for k in expected if ".item." in k) > 20


# --------------------------------------------------------------------------- Folder


@pytest.mark.parametrize("seed", SEEDS)
async def test_fold_in_one_batch_matches_the_reference(seed):
    log = make_log(seed)
    views = await fold_all(log)
    assert views.data == reference_views(log)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cache_size", [10_000, 1], ids=["cache", "tiny-cache"])
async def test_batching_does_not_change_the_views(seed, cache_size):
    log = make_log(seed)
    whole = await fold_all(log, cache_size=cache_size)
    one_by_one = await fold_all(log, [1] * len(log), cache_size=cache_size)
    assert one_by_one.data == whole.data
    for variant in range(3):
        sizes = random_sizes(len(log), seed * 100 + variant)
        assert len(sizes) > 3
        randomly = await fold_all(log, sizes, cache_size=cache_size)
        assert randomly.data == whole.data, sizes


@pytest.mark.parametrize("seed", SEEDS)
async def test_redelivering_a_batch_leaves_the_views_unchanged(seed):
    log = make_log(seed)
    clean = await fold_all(log)

    # The whole log, twice.
    views = MemoryViews()
    folder = Folder(views)
    await folder.fold(log)
    await folder.fold(log)
    assert views.data == clean.data

    # Every batch twice in a row, by the same folder and by a fresh one (cold cache).
    for fresh in (False, True):
        views = MemoryViews()
        folder = Folder(views)
        for batch in split(log, random_sizes(len(log), seed)):
            await folder.fold(batch)
            if fresh:
                folder = Folder(views)
            await folder.fold(batch)
        assert views.data == clean.data


def without_checkpoint(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != CHECKPOINT_KEY}


@pytest.mark.parametrize("seed", SEEDS)
async def test_a_late_redelivery_of_an_earlier_batch_changes_no_view(seed):
    # A lost ack: JetStream redelivers an old batch after later ones were applied.
    log = make_log(seed)
    clean = await fold_all(log)
    batches = split(log, random_sizes(len(log), seed))
    views = MemoryViews()
    folder = Folder(views)
    for batch in batches:
        await folder.fold(batch)
    for old in (batches[0], batches[len(batches) // 2], [log[0]]):
        await folder.fold(old)
        await Folder(views).fold(old)
        assert without_checkpoint(views.data) == without_checkpoint(clean.data)


async def test_a_late_redelivery_does_not_move_the_checkpoint_back():
    # `checkpoint` is what list endpoints wait on (wait_checkpoint(last_seq of the log)):
    # once it says seq n is applied, re-applying older events must not lower it.
    log = make_log(1)
    views = MemoryViews()
    folder = Folder(views)
    await folder.fold(log[:100])
    await folder.fold(log[100:])
    assert views.data[CHECKPOINT_KEY] == {"seq": log[-1].seq}
    await folder.fold(log[:100])  # redelivered late
    assert views.data[CHECKPOINT_KEY] == {"seq": log[-1].seq}


class SimulatedCrash(Exception):
    pass


class CrashingViews:
    """A ViewStore around MemoryViews whose `write` calls numbered in `fail_on` crash.

    With `partial`, a crashing write first applies a random prefix of its changes (KV
    writes them in order, each atomic batch acknowledged before the next is sent, so a
    crash leaves a prefix at a batch boundary; any prefix is a harder test).
    """

    def __init__(
        self, inner: MemoryViews, fail_on: set[int], partial: random.Random | None = None
    ) -> None:
        self.inner = inner
        self.fail_on = fail_on
        self.partial = partial
        self.calls = 0
        self.crashes = 0

    async def get(self, key: str) -> dict[str, Any] | None:
        return await self.inner.get(key)

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        return await self.inner.get_many(keys)

    async def write(self, changes: list[Any]) -> None:
        self.calls += 1
        if self.calls in self.fail_on:
            self.crashes += 1
            if self.partial is not None and changes:
                await self.inner.write(changes[: self.partial.randint(0, len(changes))])
            raise SimulatedCrash(f"write #{self.calls}")
        await self.inner.write(changes)


CRASH_LOG = make_log(7)
CRASH_BATCHES = random_sizes(len(CRASH_LOG), 7, low=20, high=60)
WRITES_PER_FOLD = 1  # data, responses, conversation views, index + checkpoint, in order


@pytest.fixture(scope="module")
async def clean_crash_fold() -> dict[str, Any]:
    views = await fold_all(CRASH_LOG)
    assert views.data == reference_views(CRASH_LOG)
    return views.data


@pytest.mark.parametrize("partial", [False, True], ids=["whole-write", "partial-write"])
@pytest.mark.parametrize("retry", ["new-folder", "same-folder"])
@pytest.mark.parametrize("n", range(1, WRITES_PER_FOLD * len(CRASH_BATCHES) + 1))
async def test_a_crash_at_any_write_is_repaired_by_redelivery(n, retry, partial, clean_crash_fold):
    data = MemoryViews()
    crashing = CrashingViews(data, {n}, random.Random(n) if partial else None)
    folder = Folder(crashing)
    batches = split(CRASH_LOG, CRASH_BATCHES)
    crashed_at = None
    for i, batch in enumerate(batches):
        if crashed_at is None:
            try:
                await folder.fold(batch)
                continue
            except SimulatedCrash:
                crashed_at = i
                # The projector restarts (new folder on a healthy connection) or, like the
                # worker, retries the same batch with the same folder.
                folder = Folder(data) if retry == "new-folder" else folder
                if retry == "same-folder":
                    crashing.fail_on = set()
        await folder.fold(batch)
    assert crashed_at == (n - 1) // WRITES_PER_FOLD, "the crash did not happen where planned"
    assert crashing.crashes == 1
    assert data.data == clean_crash_fold


@pytest.mark.parametrize("partial", [False, True], ids=["whole-write", "partial-write"])
@pytest.mark.parametrize("seed", range(10))
async def test_repeated_crashes_with_worker_retries_converge(seed, partial, clean_crash_fold):
    # Like the worker: retry each batch with the same folder until it goes through, with
    # crashes scattered over a fifth of all write calls.
    rng = random.Random(seed)
    total = WRITES_PER_FOLD * len(CRASH_BATCHES) * 3
    data = MemoryViews()
    crashing = CrashingViews(
        data,
        {rng.randint(1, 9)} | {i for i in range(1, total) if rng.random() < 0.2},
        random.Random(seed) if partial else None,
    )
    folder = Folder(crashing)
    for batch in split(CRASH_LOG, random_sizes(len(CRASH_LOG), seed, low=5, high=50)):
        while True:
            try:
                await folder.fold(batch)
                break
            except SimulatedCrash:
                pass
    assert crashing.crashes > 0
    assert data.data == clean_crash_fold


class DropDeletes(CrashingViews):
    """Crashes on write #`n` after applying only its item ref Puts: the ref says deleted,
    the item is still there, nothing committed. An ordered write cannot leave that (the
    item's Delete comes first), but views written when one phase's keys were written
    concurrently can hold it."""

    def __init__(self, inner: MemoryViews, n: int) -> None:
        super().__init__(inner, {n})

    async def write(self, changes: list[Any]) -> None:
        self.calls += 1
        if self.calls in self.fail_on:
            refs = [c for c in changes if isinstance(c, Put) and ".ref." in c.key]
            await self.inner.write(refs)
            raise SimulatedCrash(f"write #{self.calls}")
        await self.inner.write(changes)


async def test_a_crash_between_an_items_ref_and_its_delete_is_repaired():
    # The ref marked deleted, the item's Delete lost: redelivery must still remove it.
    log = [created("conv_a", 1), added("conv_a", "msg_0", 2), added("conv_a", "msg_1", 3)]
    batch = [item_deleted("conv_a", "msg_0", 4)]
    clean = await fold_all(log + batch)
    assert item_key("conv_a", 0) not in clean.data

    data = MemoryViews()
    await Folder(data).fold(log)
    with pytest.raises(SimulatedCrash):
        await Folder(DropDeletes(data, 1)).fold(batch)
    assert data.data[ref_key("conv_a", "msg_0")] == {"pos": 0, "deleted": True}
    await Folder(data).fold(batch)  # redelivery

    reader = ViewReader(data)
    conv = await reader.conversation("conv_a")
    assert conv is not None
    assert ids(await reader.items(conv, None, 10, "desc")) == ["msg_1"]
    assert data.data == clean.data


# --------------------------------------------------------------------------- ViewReader


async def reader_over(events: list[Event]) -> tuple[ViewReader, MemoryViews]:
    views = await fold_all(events)
    return ViewReader(views, wait_timeout=0.05), views


async def conversation_with_items(n: int, deleted: tuple[int, ...] = ()) -> tuple[ViewReader, Any]:
    events = [created("conv_a", 1), created("conv_b", 2), added("conv_b", "msg_other", 3)]
    seq = 3
    for i in range(n):
        seq += 1
        events.append(added("conv_a", f"msg_{i}", seq))
    for i in deleted:
        seq += 1
        events.append(item_deleted("conv_a", f"msg_{i}", seq))
    reader, _ = await reader_over(events)
    conv = await reader.conversation("conv_a")
    assert conv is not None and conv.next_item_pos == n
    return reader, conv


def ids(page: Any) -> list[str]:
    return [row["id"] for row in page.data]


async def test_items_page_newest_first_and_oldest_first():
    reader, conv = await conversation_with_items(5)
    page = await reader.items(conv, None, 20, "desc")
    assert ids(page) == ["msg_4", "msg_3", "msg_2", "msg_1", "msg_0"]
    assert not page.has_more
    assert page.data[0] == msg("msg_4", "text of msg_4")  # the stored item, as added
    page = await reader.items(conv, None, 20, "asc")
    assert ids(page) == ["msg_0", "msg_1", "msg_2", "msg_3", "msg_4"]
    assert not page.has_more


async def test_items_after_cursor_in_both_orders():
    reader, conv = await conversation_with_items(5)
    page = await reader.items(conv, None, 2, "desc")
    assert (ids(page), page.has_more) == (["msg_4", "msg_3"], True)
    page = await reader.items(conv, "msg_3", 2, "desc")
    assert (ids(page), page.has_more) == (["msg_2", "msg_1"], True)
    page = await reader.items(conv, "msg_1", 2, "desc")
    assert (ids(page), page.has_more) == (["msg_0"], False)
    page = await reader.items(conv, "msg_0", 2, "desc")
    assert (ids(page), page.has_more) == ([], False)

    page = await reader.items(conv, None, 2, "asc")
    assert (ids(page), page.has_more) == (["msg_0", "msg_1"], True)
    page = await reader.items(conv, "msg_1", 2, "asc")
    assert (ids(page), page.has_more) == (["msg_2", "msg_3"], True)
    page = await reader.items(conv, "msg_3", 2, "asc")
    assert (ids(page), page.has_more) == (["msg_4"], False)
    page = await reader.items(conv, "msg_4", 2, "asc")
    assert (ids(page), page.has_more) == ([], False)


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_items_has_more_at_exact_multiples_of_limit(order):
    reader, conv = await conversation_with_items(6)
    everything = ids(await reader.items(conv, None, 100, order))
    assert len(everything) == 6
    for limit in (1, 2, 3, 6):
        seen, after = [], None
        while True:
            page = await reader.items(conv, after, limit, order)
            seen += ids(page)
            assert len(page.data) <= limit
            # More exist exactly when the page stops before the end of the list.
            assert page.has_more == (len(seen) < 6), (limit, seen)
            if not page.has_more:
                break
            assert len(page.data) == limit
            after = page.data[-1]["id"]
        assert seen == everything
    page = await reader.items(conv, None, 5, order)
    assert len(page.data) == 5 and page.has_more
    page = await reader.items(conv, None, 7, order)
    assert len(page.data) == 6 and not page.has_more


async def test_items_skip_deleted_holes():
    reader, conv = await conversation_with_items(10, deleted=(2, 5, 6))
    page = await reader.items(conv, None, 3, "desc")
    assert (ids(page), page.has_more) == (["msg_9", "msg_8", "msg_7"], True)
    page = await reader.items(conv, "msg_7", 3, "desc")
    assert (ids(page), page.has_more) == (["msg_4", "msg_3", "msg_1"], True)
    page = await reader.items(conv, "msg_1", 3, "desc")
    assert (ids(page), page.has_more) == (["msg_0"], False)
    page = await reader.items(conv, None, 4, "asc")
    assert (ids(page), page.has_more) == (["msg_0", "msg_1", "msg_3", "msg_4"], True)
    page = await reader.items(conv, "msg_4", 4, "asc")
    assert (ids(page), page.has_more) == (["msg_7", "msg_8", "msg_9"], False)


async def test_has_more_is_false_when_only_holes_remain():
    reader, conv = await conversation_with_items(10, deleted=(0, 1, 2))
    page = await reader.items(conv, None, 7, "desc")
    assert ids(page) == [f"msg_{i}" for i in range(9, 2, -1)]
    assert not page.has_more
    page = await reader.items(conv, "msg_3", 7, "desc")
    assert (ids(page), page.has_more) == ([], False)

    reader, conv = await conversation_with_items(10, deleted=(7, 8, 9))
    page = await reader.items(conv, None, 7, "asc")
    assert (ids(page), page.has_more) == ([f"msg_{i}" for i in range(7)], False)
    page = await reader.items(conv, None, 6, "asc")
    assert page.has_more


async def test_items_page_across_windows_of_only_holes():
    # Only the first and the last of 30 items are left: the windows in between are all holes.
    reader, conv = await conversation_with_items(30, deleted=tuple(range(1, 29)))
    page = await reader.items(conv, None, 2, "desc")
    assert (ids(page), page.has_more) == (["msg_29", "msg_0"], False)
    page = await reader.items(conv, None, 1, "desc")
    assert (ids(page), page.has_more) == (["msg_29"], True)
    page = await reader.items(conv, "msg_29", 1, "desc")
    assert (ids(page), page.has_more) == (["msg_0"], False)
    page = await reader.items(conv, None, 1, "asc")
    assert (ids(page), page.has_more) == (["msg_0"], True)
    page = await reader.items(conv, "msg_0", 1, "asc")
    assert (ids(page), page.has_more) == (["msg_29"], False)
    # A cursor in the middle of the holes.
    page = await reader.items(conv, "msg_15", 5, "asc")
    assert (ids(page), page.has_more) == (["msg_29"], False)

    reader, conv = await conversation_with_items(30, deleted=tuple(range(30)))
    for order in ("asc", "desc"):
        page = await reader.items(conv, None, 3, order)
        assert (page.data, page.has_more) == ([], False)


async def test_items_cursor_on_a_deleted_item_still_works():
    reader, conv = await conversation_with_items(10, deleted=(2, 5, 6))
    page = await reader.items(conv, "msg_5", 2, "desc")
    assert (ids(page), page.has_more) == (["msg_4", "msg_3"], True)
    page = await reader.items(conv, "msg_5", 2, "asc")
    assert (ids(page), page.has_more) == (["msg_7", "msg_8"], True)
    page = await reader.items(conv, "msg_6", 5, "asc")
    assert (ids(page), page.has_more) == (["msg_7", "msg_8", "msg_9"], False)
    assert await reader.item("conv_a", "msg_5") is None
    assert await reader.item("conv_a", "msg_4") == msg("msg_4", "text of msg_4")


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_items_unknown_cursor_raises(order):
    reader, conv = await conversation_with_items(3)
    with pytest.raises(CursorNotFound):
        await reader.items(conv, "msg_nope", 2, order)
    with pytest.raises(CursorNotFound):  # an item of another conversation
        await reader.items(conv, "msg_other", 2, order)


async def conversations_fixture() -> ViewReader:
    events: list[Event] = []
    for i in range(6):
        events.append(created(f"conv_{i}", i + 1, created_at=1_700_000_000 + i, n=str(i)))
    events += [conv_deleted("conv_2", 7), conv_deleted("conv_0", 8), replaced("conv_5", 9, n="x")]
    reader, _ = await reader_over(events)
    return reader


async def test_conversations_page_newest_first_skipping_deleted():
    reader = await conversations_fixture()
    page = await reader.conversations(DEFAULT_TENANT, None, 20, "desc")
    assert ids(page) == ["conv_5", "conv_4", "conv_3", "conv_1"]
    assert not page.has_more
    assert page.data[0] == {
        "id": "conv_5",
        "object": "conversation",
        "created_at": 1_700_000_005,
        "metadata": {"n": "x"},
    }
    page = await reader.conversations(DEFAULT_TENANT, None, 20, "asc")
    assert (ids(page), page.has_more) == (["conv_1", "conv_3", "conv_4", "conv_5"], False)


async def test_conversations_pages_and_cursors():
    reader = await conversations_fixture()
    page = await reader.conversations(DEFAULT_TENANT, None, 2, "desc")
    assert (ids(page), page.has_more) == (["conv_5", "conv_4"], True)
    page = await reader.conversations(DEFAULT_TENANT, "conv_4", 2, "desc")
    # Only the deleted conv_0 is left below conv_1: no more pages.
    assert (ids(page), page.has_more) == (["conv_3", "conv_1"], False)
    page = await reader.conversations(DEFAULT_TENANT, None, 3, "desc")
    assert (ids(page), page.has_more) == (["conv_5", "conv_4", "conv_3"], True)
    page = await reader.conversations(DEFAULT_TENANT, None, 4, "desc")
    assert (ids(page), page.has_more) == (["conv_5", "conv_4", "conv_3", "conv_1"], False)
    page = await reader.conversations(DEFAULT_TENANT, "conv_1", 2, "asc")
    assert (ids(page), page.has_more) == (["conv_3", "conv_4"], True)
    page = await reader.conversations(DEFAULT_TENANT, "conv_4", 2, "asc")
    assert (ids(page), page.has_more) == (["conv_5"], False)
    # A deleted conversation still works as a cursor.
    page = await reader.conversations(DEFAULT_TENANT, "conv_2", 5, "desc")
    assert (ids(page), page.has_more) == (["conv_1"], False)
    page = await reader.conversations(DEFAULT_TENANT, "conv_2", 1, "asc")
    assert (ids(page), page.has_more) == (["conv_3"], True)
    with pytest.raises(CursorNotFound):
        await reader.conversations(DEFAULT_TENANT, "conv_nope", 2, "desc")


class PrefixCrash(CrashingViews):
    """Crashes on write #`n` after applying its first `k` changes (a crash between the
    in-order batches of a KV write leaves such a prefix)."""

    def __init__(self, inner: MemoryViews, n: int, k: int) -> None:
        super().__init__(inner, {n})
        self.k = k
        self.total = 0

    async def write(self, changes: list[Any]) -> None:
        self.calls += 1
        if self.calls in self.fail_on:
            self.total = len(changes)
            await self.inner.write(changes[: self.k])
            raise SimulatedCrash(f"write #{self.calls}")
        await self.inner.write(changes)


@pytest.mark.parametrize("k", range(4))  # a creation writes 4 keys (checked below)
async def test_a_half_written_creation_is_not_listed(k):
    # A crash part way through the write of a creation: the index counter advances only
    # after the conversation view is stored, so a listing shows conv_2 whole or not at all.
    data = MemoryViews()
    await Folder(data).fold([created("conv_0", 1), created("conv_1", 2)])
    crashing = PrefixCrash(data, 1, k)
    with pytest.raises(SimulatedCrash):
        await Folder(crashing).fold([created("conv_2", 3)])
    assert crashing.total == 4, "every proper prefix of the write is tried"
    page = await ViewReader(data).conversations(DEFAULT_TENANT, None, 20, "desc")
    listed = ["conv_2", "conv_1", "conv_0"] if data.data[INDEX_KEY]["count"] == 3 else None
    assert (ids(page), page.has_more) == (listed or ["conv_1", "conv_0"], False)
    if listed:
        assert data.data[conversation_key("conv_2")]["id"] == "conv_2"


async def test_conversations_trust_the_deleted_flag_of_the_view():
    # An index entry that outlived its conversation's deletion is not listed.
    reader, views = await reader_over([created("conv_0", 1), created("conv_1", 2)])
    views.data[conversation_key("conv_1")] = {**views.data["conv.conv_1"], "deleted": True}
    page = await reader.conversations(DEFAULT_TENANT, None, 20, "desc")
    assert (ids(page), page.has_more) == (["conv_0"], False)


async def test_conversations_on_empty_views():
    reader = ViewReader(MemoryViews())
    for order in ("asc", "desc"):
        page = await reader.conversations(DEFAULT_TENANT, None, 20, order)
        assert (page.data, page.has_more) == ([], False)


class CountingViews:
    """Counts the keys a reader asks for."""

    def __init__(self, inner: MemoryViews) -> None:
        self.inner = inner
        self.keys = 0

    async def get(self, key: str) -> dict[str, Any] | None:
        self.keys += 1
        return await self.inner.get(key)

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        self.keys += len(keys)
        return await self.inner.get_many(keys)

    async def write(self, changes: list[Any]) -> None:
        await self.inner.write(changes)


@pytest.fixture(scope="module")
async def big_views() -> MemoryViews:
    n = 10_000
    events: list[Event] = [created("conv_big", 1)]
    events += [added("conv_big", f"msg_{i}", i + 2) for i in range(n)]
    events += [created(f"conv_{i}", n + 2 + i) for i in range(n)]
    events += [created(f"conv_tiny_{i}", 2 * n + 2 + i, tenant="tiny") for i in range(3)]
    return await fold_all(events)


@pytest.mark.parametrize(
    ("after", "order", "first"),
    [
        (None, "desc", 9999),
        (None, "asc", 0),
        ("msg_5000", "desc", 4999),
        ("msg_5000", "asc", 5001),
    ],
)
async def test_an_items_page_reads_about_limit_keys(big_views, after, order, first):
    counting = CountingViews(big_views)
    reader = ViewReader(counting)
    conv = await reader.conversation("conv_big")
    assert conv is not None and conv.next_item_pos == 10_000
    counting.keys = 0
    page = await reader.items(conv, after, 20, order)
    step = 1 if order == "asc" else -1
    assert ids(page) == [f"msg_{first + step * i}" for i in range(20)]
    assert page.has_more
    assert counting.keys < 50, counting.keys


@pytest.mark.parametrize("after", [None, "conv_5000"])
@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_a_conversations_page_reads_about_limit_keys(big_views, after, order):
    counting = CountingViews(big_views)
    page = await ViewReader(counting).conversations(DEFAULT_TENANT, after, 20, order)
    assert len(page.data) == 20 and page.has_more
    assert counting.keys < 50, counting.keys


@pytest.mark.parametrize("order", ["asc", "desc"])
async def test_a_small_tenants_page_costs_nothing_of_a_big_tenants_index(big_views, order):
    counting = CountingViews(big_views)
    page = await ViewReader(counting).conversations("tiny", None, 20, order)
    expected = [f"conv_tiny_{i}" for i in range(3)]
    assert ids(page) == (expected if order == "asc" else expected[::-1])
    assert not page.has_more
    assert counting.keys < 10, counting.keys


# --------------------------------------------------------------------------- tenants


async def test_each_tenant_lists_only_its_own_conversations_from_its_own_index():
    events: list[Event] = []
    for i in range(8):
        tenant = "acme" if i % 3 else "globex"
        events.append(created(f"conv_{i}", i + 1, tenant=tenant))
    events.append(conv_deleted("conv_4", 9))
    reader, views = await reader_over(events)
    acme = await reader.conversations("acme", None, 20, "asc")
    globex = await reader.conversations("globex", None, 20, "asc")
    assert ids(acme) == ["conv_1", "conv_2", "conv_5", "conv_7"]
    assert ids(globex) == ["conv_0", "conv_3", "conv_6"]
    assert ids(await reader.conversations(DEFAULT_TENANT, None, 20, "asc")) == []
    # Dense positions per tenant: a page never walks another tenant's entries.
    assert views.data[index_key("acme")]["count"] == 5
    assert views.data[index_key("globex")]["count"] == 3
    assert views.data[conversation_key("conv_6")]["position"] == 2
    assert index_entry_key(2, "acme") not in views.data  # conv_4, deleted
    # Another tenant's conversation is no cursor: the same as an unknown id.
    with pytest.raises(CursorNotFound):
        await reader.conversations("acme", "conv_3", 2, "desc")
    page = await reader.conversations("acme", "conv_5", 1, "desc")
    assert (ids(page), page.has_more) == (["conv_2"], True)


async def test_a_purge_removes_the_entry_from_its_tenants_index():
    events = [created("conv_a", 1, tenant="acme"), created("conv_b", 2, tenant="acme")]
    events.append(ConversationPurged(conversation_id="conv_a", purged_events=1, seq=3))
    reader, views = await reader_over(events)
    assert ids(await reader.conversations("acme", None, 20, "asc")) == ["conv_b"]
    assert index_entry_key(0, "acme") not in views.data
    assert conversation_key("conv_a") not in views.data


def test_a_view_written_before_tenants_belongs_to_the_default_tenant():
    old = {"id": "conv_a", "created_at": 1, "metadata": {}, "last_seq": 3, "position": 0}
    assert ConversationView(**old).tenant == DEFAULT_TENANT
    old_event = b'{"type":"ConversationCreated","conversation_id":"conv_a","created_at":1}'
    assert decode(old_event).tenant == DEFAULT_TENANT
