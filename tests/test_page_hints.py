"""A list page's items are read in the same request as the conversation view when this
process can guess where the page lies (projections/page_hints.py); a guess never changes
a page, only how many requests it takes."""

import random
from typing import Any

import pytest
from openai import OpenAI

from events.chain import GENESIS
from events.history import History
from events.schema import ConversationCreated, ItemAdded, ItemDeleted, decode
from events.store import EventStore
from projections.fold import Folder
from projections.page_hints import DEEPER, NEWER, PageHints
from projections.reader import Page, ViewReader
from projections.store import KVViews, open_bucket
from projections.views import ConversationView, conversation_key, item_key, ref_key
from tests.test_apply import fold_all, make_log
from tests.test_projector import message
from tests.test_read_through import text


def page(last: tuple[str, int] | None, more_pos: int | None = None) -> Page:
    """A page as the reader returns it, by its last row and the row after it."""
    data = [{"id": last[0]}] if last else []
    return Page(data, more_pos is not None, last[1] if last else None, more_pos)


def test_keys_come_from_the_learned_length_and_cursors() -> None:
    hints = PageHints()
    # oldest first from the start: the first positions, whatever the conversation
    assert hints.keys("c", None, 2, "asc") == [item_key("c", p) for p in (0, 1, 2)]
    # newest first, or after a cursor, only once learned; a cursor's ref always
    assert hints.keys("c", None, 2, "desc") == []
    assert hints.keys("c", "msg_x", 2, "asc") == [ref_key("c", "msg_x")]
    hints.learn("c", 10, page(("msg_x", 4), 3), "msg_y", "asc")
    newest = [item_key("c", p) for p in range(9 + NEWER, 9 - 3, -1)]
    assert hints.keys("c", None, 2, "desc") == newest  # items added since come along
    assert hints.keys("c", "msg_x", 2, "asc") == [ref_key("c", "msg_x")] + [
        item_key("c", p) for p in (5, 6, 7)
    ]
    assert hints.keys("c", "msg_x", 2, "desc") == [ref_key("c", "msg_x")] + [
        item_key("c", p) for p in (3, 2, 1)
    ]
    hints.learn("c", 1, page(("msg_y", 0)), None, "asc")
    assert hints.keys("c", "msg_y", 5, "desc") == [ref_key("c", "msg_y")]  # nothing before 0


def test_a_newest_page_past_deleted_items_guesses_deeper_next_time() -> None:
    hints = PageHints()
    hints.learn("c", 100, page(("msg_a", 95), 90), None, "desc")  # 10 positions for 3 rows
    assert hints.keys("c", None, 2, "desc") == [item_key("c", p) for p in range(101, 89, -1)]
    hints.learn("c", 100, page(("msg_a", 95), 10), None, "desc")  # deeper than 4 pages
    assert len(hints.keys("c", None, 2, "desc")) == DEEPER * 3 + NEWER
    hints.learn("c", 100, page(("msg_b", 80), 79), "msg_a", "desc")  # a later page: same
    assert len(hints.keys("c", None, 2, "desc")) == DEEPER * 3 + NEWER


def test_the_memory_is_bounded() -> None:
    hints = PageHints(size=2)
    for n in range(3):
        hints.learn(f"c{n}", 5, page((f"msg_{n}", 1)), None, "desc")
    assert hints.keys("c0", None, 1, "desc") == []
    assert hints.keys("c0", "msg_0", 1, "asc") == [ref_key("c0", "msg_0")]
    assert hints.keys("c2", None, 1, "desc") != []


@pytest.mark.parametrize("seed", range(6))
async def test_no_guess_changes_a_page(seed: int) -> None:
    """Keys read along with the view, at the same point in time, right or wrong (holes,
    past the end, another cursor's), give the page the walk alone gives."""
    log = make_log(seed)
    views = await fold_all(log)
    reader = ViewReader(views)
    rng = random.Random(seed)
    for cid in sorted({e.conversation_id for e in log}):
        raw = views.data.get(conversation_key(cid))
        if raw is None or raw["deleted"]:
            continue
        conv = ConversationView(**raw)
        ids = [i["id"] for i in views.data.values() if "id" in i and i["id"].startswith("msg_")]
        for _ in range(30):
            order = rng.choice(("asc", "desc"))
            limit = rng.randint(1, 6)
            after = rng.choice([None, None, *ids])
            plain = await _page(reader, conv, after, limit, order, None)
            if plain is None:
                continue
            guessed = rng.sample(range(-2, conv.next_item_pos + 4), k=rng.randint(0, 12))
            keys = [item_key(cid, p) for p in guessed if p >= 0]
            keys += [ref_key(cid, after)] if after else []
            known = {k: views.data.get(k) for k in keys}
            assert await _page(reader, conv, after, limit, order, known) == plain


async def _page(
    reader: ViewReader, conv: ConversationView, after: str | None, limit: int, order: Any, known
) -> Any:
    try:
        return await reader.items(conv, after, limit, order, known)
    except Exception as exc:  # an unknown cursor must fail the same way with a guess
        return type(exc).__name__


class CountingViews(KVViews):
    """Views in KV, counting the requests made to read them."""

    requests = 0

    async def get(self, key: str) -> dict[str, Any] | None:
        self.requests += 1
        return await super().get(key)

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        if len(keys) > 1:  # a single key goes through get()
            self.requests += 1
        return await super().get_many(keys)


async def test_a_guessed_page_costs_one_request(store: EventStore) -> None:
    """The request a list pays for the view carries the page; right after a write, the
    head folded on top of it answers from memory too."""
    conv = "conv_hints"
    items = [message(f"i{n}") for n in range(60)]
    created = ConversationCreated(conversation_id=conv, created_at=1)
    head_seq, prev = 0, GENESIS
    for start in range(0, 60, 20):
        events = [ItemAdded(conversation_id=conv, item=i) for i in items[start : start + 20]]
        head_seq = await store.append(
            ([created] if start == 0 else []) + events, head_seq, prev, "default"
        )
        head = await store.head(conv)
        assert head is not None
        prev = head.hash
    js = store.js
    kv = CountingViews(js, await open_bucket(js, "views_hints"), "views_hints")
    folder = Folder(kv)

    async def project() -> None:
        stored, _ = await History(store).page(conv, 0, 1000)
        await folder.fold([decode(e.data, e.seq) for e in stored])

    await project()
    reader = ViewReader(kv, wait_timeout=0.3, history=History(store))
    hints = PageHints()

    async def listed(after: str | None, order: Any) -> tuple[list[str], int]:
        kv.requests = 0
        known = dict.fromkeys(hints.keys(conv, after, 20, order))
        view, at = await reader.caught_up(conv, store.head(conv), known)
        got = await at.items(view, after, 20, order, known)
        hints.learn(conv, view.next_item_pos, got, after, order)
        return [i["id"] for i in got.data], kv.requests

    ids = [i["id"] for i in items]
    assert await listed(None, "desc") == (ids[:-21:-1], 2)  # nothing learned yet
    assert await listed(None, "desc") == (ids[:-21:-1], 1)
    assert await listed(None, "asc") == (ids[:20], 1)  # the first positions need no guess
    assert await listed(ids[19], "asc") == (ids[20:40], 1)  # the last page's cursor
    assert await listed(ids[39], "asc") == (ids[40:], 1)
    assert await listed(ids[40], "desc") == (ids[39:19:-1], 1)  # the first page's cursor
    assert await listed(ids[45], "desc") == (ids[44:24:-1], 2)  # a cursor not seen: 2

    # Right after a one-event write (the views one event short of the head): the head
    # is folded on top of the values read with the view, and the page is complete.
    head = await store.head(conv)
    assert head is not None
    extra = message("new")
    await store.append(
        [ItemAdded(conversation_id=conv, item=extra)], head.seq, head.hash, "default"
    )
    assert await listed(None, "desc") == ([extra["id"], *ids[:-20:-1]], 1)
    # A deletion within the guessed window, then more items than the guess reaches.
    await project()
    head = await store.head(conv)
    assert head is not None
    await store.append(
        [ItemDeleted(conversation_id=conv, item_id=ids[58])], head.seq, head.hash, "default"
    )
    # The fold reads the deleted item's ref; the hole needs one position more (has_more).
    assert await listed(None, "desc") == ([extra["id"], ids[59], *ids[57:39:-1]], 3)
    more = [message(f"more{n}") for n in range(NEWER + 3)]
    head = await store.head(conv)
    assert head is not None
    await store.append(
        [ItemAdded(conversation_id=conv, item=i) for i in more], head.seq, head.hash, "default"
    )
    await project()
    newest = [i["id"] for i in reversed(more)] + [extra["id"], ids[59], *ids[57:44:-1]]
    assert await listed(None, "desc") == (newest, 2)  # the newest 3 beyond the guess
    assert await listed(None, "desc") == (newest, 1)


def _texts(page: Any) -> list[str]:
    return [i.content[0].text for i in page.data]


def test_pages_stay_exact_while_another_replica_changes_the_conversation(
    client: OpenAI, client2: OpenAI
) -> None:
    """Replica 1 learns where pages lie; replica 2 adds and deletes items in and around
    them; replica 1's pages (read-your-writes across replicas) are still exactly right."""
    expected = [f"m{n}" for n in range(30)]
    conv = client.conversations.create(items=[text(n) for n in range(20)])
    client.conversations.items.create(conv.id, items=[text(n) for n in range(20, 30)])
    ids: dict[str, str] = {}
    pages = []
    after = None
    while True:  # oldest first, ten at a time: replica 1 learns each cursor
        page = client.conversations.items.list(conv.id, order="asc", limit=10, after=after)
        pages.append(page)
        ids.update({i.content[0].text: i.id for i in page.data})
        if not page.has_more:
            break
        after = page.last_id
    assert [t for p in pages for t in _texts(p)] == expected
    assert _texts(client.conversations.items.list(conv.id, limit=10)) == expected[:-11:-1]

    added = client2.conversations.items.create(conv.id, items=[text(n) for n in range(30, 35)])
    expected += [f"m{n}" for n in range(30, 35)]
    ids.update({i.content[0].text: i.id for i in added.data})
    for gone in ("m10", "m15", "m33"):  # right after a cursor, mid-page, among the newest
        client2.conversations.items.delete(ids[gone], conversation_id=conv.id)
        expected.remove(gone)
    assert _texts(client.conversations.items.list(conv.id, limit=10)) == expected[:-11:-1]
    cursor = pages[0].last_id  # m9's, learned by replica 1
    page = client.conversations.items.list(conv.id, order="asc", limit=10, after=cursor)
    assert _texts(page) == expected[10:20] and page.has_more
    client2.conversations.items.delete(cursor, conversation_id=conv.id)  # the cursor itself
    expected.remove("m9")
    page = client.conversations.items.list(conv.id, order="asc", limit=10, after=cursor)
    assert _texts(page) == expected[9:19]
    desc = client.conversations.items.list(conv.id, order="desc", limit=5, after=ids["m20"])
    assert _texts(desc) == ["m19", "m18", "m17", "m16", "m14"]
