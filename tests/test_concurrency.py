"""Concurrent writers and read-your-writes across API replicas."""

import asyncio
import time

import httpx
import pytest

from events.chain import ChainVerifier
from events.commands import ConversationNotFound, decide_and_append, fresh_live_head, live_head
from events.ids import new_response_id
from events.schema import (
    ConversationCreated,
    ConversationDeleted,
    ItemAdded,
    ResponseCancelled,
    ResponseRequested,
)
from events.store import (
    ConcurrencyConflict,
    EventStore,
    Head,
    StoreUnavailable,
    head_header,
    parse_head_header,
)
from events.subjects import STREAM_NAME, conversation_filter
from tests.test_projector import message


async def test_50_concurrent_appends_read_your_writes(api_urls):
    a, b = api_urls
    async with httpx.AsyncClient(timeout=60) as http:
        conv = (await http.post(f"{a}/v1/conversations", json={})).json()["id"]

        async def writer(n: int) -> tuple[str, bool]:
            write, read = (a, b) if n % 2 else (b, a)
            r = await http.post(
                f"{write}/v1/conversations/{conv}/items",
                json={"items": [{"type": "message", "role": "user", "content": f"w{n}"}]},
            )
            assert r.status_code == 200, r.text
            item_id = r.json()["data"][0]["id"]
            # Another replica, right after the write's response: must see it.
            got = await http.get(f"{read}/v1/conversations/{conv}/items/{item_id}")
            page = await http.get(f"{read}/v1/conversations/{conv}/items", params={"limit": 100})
            visible = item_id in [i["id"] for i in page.json()["data"]]
            return item_id, got.status_code == 200 and visible

        results = await asyncio.gather(*(writer(n) for n in range(50)))
        assert all(seen for _, seen in results), "a write was not visible to a later read"
        written = {item_id for item_id, _ in results}
        assert len(written) == 50

        pages = [
            (
                await http.get(
                    f"{url}/v1/conversations/{conv}/items", params={"limit": 100, "order": "asc"}
                )
            ).json()
            for url in (a, b, a)
        ]
        ids = [i["id"] for i in pages[0]["data"]]
        assert len(ids) == 50 and set(ids) == written  # none lost, none duplicated
        assert all([i["id"] for i in p["data"]] == ids for p in pages)  # one stable order
        texts = sorted(i["content"][0]["text"] for i in pages[0]["data"])
        assert texts == sorted(f"w{n}" for n in range(50))


async def test_read_your_writes_metadata_and_delete(api_urls):
    a, b = api_urls
    async with httpx.AsyncClient(timeout=30) as http:
        conv = (await http.post(f"{a}/v1/conversations", json={})).json()["id"]
        for n in range(20):
            await http.post(f"{a}/v1/conversations/{conv}", json={"metadata": {"n": str(n)}})
            got = (await http.get(f"{b}/v1/conversations/{conv}")).json()
            assert "metadata" in got, got
            assert got["metadata"] == {"n": str(n)}
        await http.delete(f"{b}/v1/conversations/{conv}")
        assert (await http.get(f"{a}/v1/conversations/{conv}")).status_code == 404
        listed = (await http.get(f"{a}/v1/conversations", params={"limit": 100})).json()
        assert conv not in [c["id"] for c in listed["data"]]


async def test_a_replica_never_refuses_on_the_head_it_remembers(api_urls):
    """Replica `a` remembers the head its own last append left; `b` writes since. Through
    HTTP: deleting the item `b` added succeeds on `a`, deleting one `b` deleted is a 404,
    and a new item lands after `b`'s. (Whether `a`'s views lag here is up to timing; the
    store-level tests below force the stale case.)"""
    a, b = api_urls
    user = {"type": "message", "role": "user"}
    async with httpx.AsyncClient(timeout=30) as http:
        conv = (await http.post(f"{a}/v1/conversations", json={})).json()["id"]
        items = f"/v1/conversations/{conv}/items"
        first = (await http.post(a + items, json={"items": [{**user, "content": "a1"}]})).json()
        added = (await http.post(b + items, json={"items": [{**user, "content": "b1"}]})).json()
        item = added["data"][0]["id"]
        r = await http.delete(f"{a}{items}/{item}")
        assert r.status_code == 200, r.text  # a stale head would say 404
        r = await http.delete(f"{b}{items}/{first['data'][0]['id']}")
        assert r.status_code == 200, r.text
        r = await http.delete(f"{a}{items}/{first['data'][0]['id']}")
        assert r.status_code == 404, r.text  # gone, through b: only the real head says so
        await http.post(b + items, json={"items": [{**user, "content": "b2"}]})
        r = await http.post(a + items, json={"items": [{**user, "content": "a2"}]})
        assert r.status_code == 200, r.text
        page = (await http.get(a + items, params={"order": "asc"})).json()
        assert [i["content"][0]["text"] for i in page["data"]] == ["b2", "a2"]
        await http.delete(f"{b}/v1/conversations/{conv}")
        r = await http.post(a + items, json={"items": [{**user, "content": "late"}]})
        assert r.status_code == 404, r.text


async def test_remembered_head_saves_the_head_read_and_a_stale_one_is_retried(store):
    conv = "conv_remembered"
    created = ConversationCreated(conversation_id=conv, created_at=1)
    first = await store.append([created], 0)
    other = EventStore(store.nc, store.js)  # another API replica
    seen: list[int] = []

    async def add(head: Head) -> list:
        seen.append(head.seq)
        return [ItemAdded(conversation_id=conv, item=message("x"))]

    second, _ = await decide_and_append(store, conv, add)
    assert seen == [first]  # decided on the remembered head: no head read
    head = await other.head(conv)
    third = await other.append(
        [ItemAdded(conversation_id=conv, item=message("y"))], head.seq, head.hash
    )
    seen.clear()
    fourth, _ = await decide_and_append(store, conv, add)
    assert seen == [second, third]  # the guard refused the stale head; then the real one
    assert fourth == third + 1


async def test_a_refusal_on_a_remembered_head_is_judged_again_on_the_real_one(store):
    conv = "conv_refusal"
    await store.append([ConversationCreated(conversation_id=conv, created_at=1)], 0)
    other = EventStore(store.nc, store.js)
    head = await other.head(conv)
    real = await other.append(
        [ItemAdded(conversation_id=conv, item=message("y"))], head.seq, head.hash
    )
    seen: list[int] = []

    async def only_on_the_real_head(head: Head) -> list:
        seen.append(head.seq)
        if head.seq < real:
            raise LookupError("not there yet")  # what a stale view would say
        return []

    assert (await decide_and_append(store, conv, only_on_the_real_head))[0] == real
    assert seen == [real - 1, real]


class CountingHeads(EventStore):
    """An EventStore that counts its head reads (the one NATS request a remembered or
    learned head saves)."""

    heads = 0

    async def head(self, conversation_id: str) -> Head | None:
        self.heads += 1
        return await super().head(conversation_id)


async def test_a_response_request_decides_on_a_learned_head_never_on_its_own_request(store):
    """The API replica that requested a response never trusts that request as the head (the
    worker appends after it), but does trust the head the worker handed over with the
    response's terminal event: the next turn is appended without a head read, and the
    thread's hash chain stays whole."""
    conv = "conv_learned"
    api = CountingHeads(store.nc, store.js)
    await api.append([ConversationCreated(conversation_id=conv, created_at=1)], 0)
    worker = EventStore(store.nc, store.js)  # the model worker's process

    async def request(head: Head) -> list:
        return [
            ResponseRequested(
                conversation_id=conv,
                response_id=new_response_id(conv),
                created_at=1,
                model="m",
                input=[],
                context_seq=head.seq,
            )
        ]

    async def answer(text: str) -> int:
        head = await worker.head(conv)
        item = ItemAdded(conversation_id=conv, item=message(text))
        return await worker.append([item], head.seq, head.hash)

    await decide_and_append(api, conv, request, fresh_live_head)
    assert api.heads == 0  # on the remembered ConversationCreated: this replica wrote it
    outcome = await answer("first answer")
    # No head learned: the remembered request is not trusted, the head is read.
    api.heads = 0
    second, _ = await decide_and_append(api, conv, request, fresh_live_head)
    assert api.heads == 1 and second == outcome + 1
    outcome = await answer("second answer")
    handed = worker.appended_head(conv)
    assert handed is not None and handed.seq == outcome
    api.learn_head(conv, handed)
    api.heads = 0
    third, _ = await decide_and_append(api, conv, request, fresh_live_head)
    assert api.heads == 0  # decided on the learned head: nothing read
    assert third == outcome + 1
    sub = await store.js.pull_subscribe(conversation_filter(conv), stream=STREAM_NAME)
    stored = await sub.fetch(10, timeout=2)
    assert len(stored) == 6
    chain = ChainVerifier()
    assert not any(chain.feed(m.metadata.sequence.stream, m.data) for m in stored)


async def test_a_stale_learned_head_costs_one_refused_append_and_no_duplicate(store):
    conv = "conv_learned_stale"
    await store.append([ConversationCreated(conversation_id=conv, created_at=1)], 0)
    worker = EventStore(store.nc, store.js)
    head = await worker.head(conv)
    await worker.append([ItemAdded(conversation_id=conv, item=message("a"))], head.seq, head.hash)
    store.learn_head(conv, worker.appended_head(conv))
    other = EventStore(store.nc, store.js)  # another replica adds an item meanwhile
    head = await other.head(conv)
    moved = await other.append(
        [ItemAdded(conversation_id=conv, item=message("b"))], head.seq, head.hash
    )
    seen: list[int] = []

    async def add(head: Head) -> list:
        seen.append(head.seq)
        return [ItemAdded(conversation_id=conv, item=message("c"))]

    last, _ = await decide_and_append(store, conv, add, fresh_live_head)
    assert seen == [moved - 1, moved]  # the learned head was refused, then the real one
    assert last == moved + 1
    assert (await store.head(conv)).seq == last


async def test_a_learned_head_never_replaces_a_later_one():
    store = EventStore(None, None)  # type: ignore[arg-type]  # memory of heads only
    later, earlier = Head(9, "e9", "ItemAdded", "h9", "t"), Head(5, "e5", "ItemAdded", "h5", "t")
    store.learn_head("c", later)
    store.learn_head("c", earlier)
    assert store.appended_head("c") == later


def test_the_head_header_carries_a_head_and_anything_else_is_no_hint():
    head = Head(42, "evt_1", "ResponseCompleted", "ab12", "acme")
    assert parse_head_header(head_header(head)) == head
    untenanted = Head(7, "evt_2", "ItemAdded", "cd34")
    assert head_header(untenanted) == "7 evt_2 ItemAdded cd34"
    assert parse_head_header(head_header(untenanted)) == untenanted
    for bad in ["", "x evt ItemAdded h", "7 evt ItemAdded", "7  ItemAdded h", "7 a b c d e"]:
        assert parse_head_header(bad) is None, bad


async def test_what_is_appended_after_a_delete_keeps_the_conversation_gone(store):
    """Events appended after ConversationDeleted (a running response's outcome) carry the
    mark on every message, alone or in a batch: the head read still finds it gone, on any
    replica, and no command decides on it."""
    conv = "conv_gone_after_delete"
    rid = new_response_id(conv)
    await store.append([ConversationCreated(conversation_id=conv, created_at=1)], 0)
    head = await store.head(conv)
    await store.append([ConversationDeleted(conversation_id=conv)], head.seq, head.hash)
    other = EventStore(store.nc, store.js)  # another replica: no remembered head
    for n in (1, 2):
        head = await other.head(conv)
        assert head.gone
        batch = [ResponseCancelled(conversation_id=conv, response_id=rid) for _ in range(n)]
        await other.append(batch, head.seq, head.hash, head.tenant, head.gone)
        fresh = await EventStore(store.nc, store.js).head(conv)
        assert fresh.event_type == "ResponseCancelled" and fresh.gone
        assert store.appended_head(conv) is None or store.appended_head(conv).gone
        assert other.appended_head(conv).gone
    with pytest.raises(ConversationNotFound):
        await live_head(other, conv)
    with pytest.raises(ConversationNotFound):  # on the head it remembers, too
        await decide_and_append(other, conv, lambda head: asyncio.sleep(0, ["never"]))


async def test_commands_on_one_conversation_take_turns_in_a_process(store):
    """Concurrent commands on one conversation through one store (one API process) run one
    at a time, each deciding once on the head the one before left: no refused append, and
    a batch of several events is never sent to lose (it used to be, quadratically)."""
    conv = "conv_turns"
    await store.append([ConversationCreated(conversation_id=conv, created_at=1)], 0)
    decisions: list[int] = []

    async def add(head: Head) -> list:
        decisions.append(head.seq)
        await asyncio.sleep(0)  # let the others run into the same head, if they may
        return [ItemAdded(conversation_id=conv, item=message(f"x{n}")) for n in range(3)]

    done = await asyncio.gather(*(decide_and_append(store, conv, add) for _ in range(40)))
    assert len(decisions) == 40  # one decision each: nobody decided on a head taken since
    assert len(set(decisions)) == 40
    assert sorted(seq for seq, _ in done) == [1 + 3 * n for n in range(1, 41)]
    assert len(store.turns) == 0  # nothing kept once idle


async def test_an_append_answered_too_late_is_found_in_the_log(store):
    """An append whose acknowledgement did not come in time (a busy server) may have been
    stored all the same: the store looks for it before giving up, so a stored write is not
    reported as failed (a client would retry it into a duplicate), and one that lost its
    place is a conflict (decided again), not a 503."""
    conv = "conv_late_answer"
    hurried = EventStore(store.nc, store.js, timeout=0)  # every acknowledgement is too late
    first = await hurried.append([ConversationCreated(conversation_id=conv, created_at=1)], 0)
    head = await store.head(conv)
    assert head.seq == first
    batch = [ItemAdded(conversation_id=conv, item=message(f"b{n}")) for n in range(3)]
    last = await hurried.append(batch, head.seq, head.hash)
    head = await store.head(conv)
    assert (head.seq, head.event_id) == (last, batch[-1].id)
    assert hurried.appended_head(conv).seq == last
    stale = [ItemAdded(conversation_id=conv, item=message("late"))]
    with pytest.raises(ConcurrencyConflict):
        await hurried.append(stale, first, "")  # refused by the guard: its place is taken
    assert (await store.head(conv)).seq == last


async def test_a_command_waiting_its_turn_fails_fast_when_nats_goes_away():
    """Behind a command stuck on an unanswered append (NATS just went away), the next one
    does not wait out that append's timeout: it fails as soon as the store says NATS is
    away, as it would alone (a CI run caught a 5 s 503 during an outage). The turn stays
    usable, and in order, for those that wait on."""
    from events.turns import Turns

    turns, away, order = Turns(), False, []

    def ready() -> None:
        if away:
            raise StoreUnavailable("not connected to NATS")

    async def stuck() -> None:
        async with turns.of("conv_t", ready):
            await asyncio.sleep(0.6)
            order.append("stuck")

    async def then(name: str) -> None:
        async with turns.of("conv_t"):  # waits whatever happens
            order.append(name)

    async def waiting() -> None:
        async with turns.of("conv_t", ready):
            order.append("never")

    holder = asyncio.create_task(stuck())
    await asyncio.sleep(0)
    later = [asyncio.create_task(then("a"))]
    queued = asyncio.create_task(waiting())  # queued while NATS is still there
    later.append(asyncio.create_task(then("b")))
    await asyncio.sleep(0.05)
    away = True
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await queued
    assert time.monotonic() - started < 0.3  # not the holder's 0.6 s
    await asyncio.gather(holder, *later)
    assert order == ["stuck", "a", "b"] and len(turns) == 0
