"""The log as a product, through real HTTP: event history as paged JSON, as Server-Sent
Events (history then live, resumable with Last-Event-ID), and `as_of` reads of the past."""

import asyncio
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from openai import OpenAI

SSE = {"Accept": "text/event-stream"}
READ_TIMEOUT = 10.0  # per read on a stream: a frame that never comes fails the test


def msg(text: str, role: str = "user") -> dict[str, Any]:
    return {"type": "message", "role": role, "content": text}


def ok(response: httpx.Response) -> Any:
    assert response.status_code == 200, (response.request.url, response.status_code, response.text)
    return response.json()


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> None:
    assert response.status_code == status, (response.request.url, response.text)
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert isinstance(error["message"], str) and error["message"]
    if param is not None:
        assert error["param"] == param, error


def history(http: httpx.Client, conv_id: str, **params: Any) -> list[dict[str, Any]]:
    """A conversation's whole history, ascending (it must fit in one page of 100)."""
    body = ok(http.get(f"/v1/conversations/{conv_id}/events", params={"limit": 100, **params}))
    assert body["has_more"] is False
    return body["data"]


def last_log_seq(http: httpx.Client) -> int:
    """The log's current end: the newest event (order=desc&limit=1), confirmed by reading
    forward from it, so tests that need a starting point do not depend on desc paging
    (which test_all_events_desc_many_subjects checks on its own)."""
    body = ok(http.get("/v1/events", params={"order": "desc", "limit": 1}))
    seq = body["data"][0]["seq"] if body["data"] else 0
    while True:
        page = ok(http.get("/v1/events", params={"after": seq, "limit": 100}))
        if not page["data"]:
            return seq
        seq = page["last_id"]


def rehash(event: dict[str, Any]) -> str:
    """sha256 of the stored event's canonical JSON without `hash` (and without the API's
    own `object` and `seq`, which are not stored)."""
    content = {k: v for k, v in event.items() if k not in ("object", "seq", "hash")}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def assert_chain(events: list[dict[str, Any]]) -> None:
    prev = ""
    for event in events:
        assert event["prev_hash"] == prev, event
        assert event["hash"] == rehash(event), event
        prev = event["hash"]


# --- Server-Sent Events ------------------------------------------------------------------


class Frame(dict):
    """One dispatched SSE event: `id`, `event`, `data` (parsed JSON)."""


class FrameParser:
    """SSE lines in, dispatched frames out: comments (`:`) skipped, multi-line data joined,
    a frame dispatched at each blank line once it has data."""

    def __init__(self) -> None:
        self.fields: dict[str, str] = {}
        self.data: list[str] = []

    def feed(self, line: str) -> Frame | None:
        if line == "":
            frame = None
            if self.data:
                frame = Frame(
                    id=self.fields.get("id"),
                    event=self.fields.get("event"),
                    data=json.loads("\n".join(self.data)),
                )
            self.fields, self.data = {}, []
            return frame
        if not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self.data.append(value)
            elif name in ("id", "event", "retry"):
                self.fields[name] = value
        return None


def frames(lines: Iterator[str]) -> Iterator[Frame]:
    parser = FrameParser()
    for line in lines:
        frame = parser.feed(line)
        if frame is not None:
            yield frame


class Stream:
    """A synchronous SSE reader over httpx with a per-read timeout and an overall deadline."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, **params: Any) -> None:
        self.client = httpx.Client(timeout=httpx.Timeout(READ_TIMEOUT, connect=5.0))
        self.cm = self.client.stream("GET", url, headers=headers or {}, params=params)
        self.response = self.cm.__enter__()
        self.frames = frames(self.response.iter_lines())

    def next(self) -> Frame:
        return next(self.frames)

    def take(self, n: int, within: float = 20.0) -> list[Frame]:
        deadline = time.monotonic() + within
        out = []
        while len(out) < n:
            assert time.monotonic() < deadline, f"only {len(out)} of {n} frames arrived: {out}"
            out.append(self.next())
        return out

    def close(self) -> None:
        self.cm.__exit__(None, None, None)
        self.client.close()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def assert_frame_matches(frame: Frame, event: dict[str, Any]) -> None:
    assert frame["id"] == str(event["seq"])
    assert frame["event"] == event["type"]
    assert frame["data"] == event


# --- 1. JSON history of one conversation ---------------------------------------------------


@pytest.fixture(scope="module")
def deleted_conversation(client: OpenAI, client2: OpenAI, http: httpx.Client) -> dict[str, Any]:
    """A conversation taken through every kind of event, ending deleted."""
    conv = client.conversations.create(
        metadata={"step": "created"}, items=[msg("first"), msg("second", "assistant")]
    )
    added = client2.conversations.items.create(
        conversation_id=conv.id, items=[msg("third"), msg("fourth")]
    ).data
    doomed = client.conversations.items.create(
        conversation_id=conv.id, items=[msg("secret to be deleted")]
    ).data[0]
    client2.conversations.update(conv.id, metadata={"step": "updated"})
    client.conversations.items.delete(doomed.id, conversation_id=conv.id)
    client2.conversations.delete(conv.id)
    assert http.get(f"/v1/conversations/{conv.id}").status_code == 404
    return {"id": conv.id, "added": [i.id for i in added], "doomed": doomed.id}


def test_history_survives_deletion_in_order_with_envelope(deleted_conversation, http, api_urls):
    conv_id = deleted_conversation["id"]
    body = ok(http.get(f"/v1/conversations/{conv_id}/events", params={"limit": 100}))
    events = body["data"]
    assert body["object"] == "list" and body["has_more"] is False
    assert [e["type"] for e in events] == [
        "ConversationCreated",
        *["ItemAdded"] * 5,
        "MetadataReplaced",
        "ItemDeleted",
        "ConversationDeleted",
    ]
    seqs = [e["seq"] for e in events]
    assert all(isinstance(s, int) and s > 0 for s in seqs)
    assert seqs == sorted(set(seqs)), "seq must be strictly increasing"
    assert (body["first_id"], body["last_id"]) == (seqs[0], seqs[-1])
    assert len({e["id"] for e in events}) == len(events)
    for event in events:
        assert event["object"] == "event"
        assert event["conversation_id"] == conv_id
        assert event["id"].startswith("evt_")
        assert event["schema_version"] == 1
        assert isinstance(event["actor"], dict) and event["actor"]["id"]
        when = datetime.fromisoformat(event["time"])
        assert when.tzinfo is not None
        assert len(event["hash"]) == 64
    times = [datetime.fromisoformat(e["time"]) for e in events]
    assert times == sorted(times)
    assert_chain(events)

    created = events[0]
    assert created["metadata"] == {"step": "created"}
    assert isinstance(created["created_at"], int)
    texts = [e["item"]["content"][0]["text"] for e in events[1:6]]
    assert texts == ["first", "second", "third", "fourth", "secret to be deleted"]
    assert [e["item"]["id"] for e in events[3:5]] == deleted_conversation["added"]
    # The deleted item's content is still in the log, and the deletion names it.
    assert events[5]["item"]["id"] == deleted_conversation["doomed"]
    assert events[6]["metadata"] == {"step": "updated"}
    assert events[7]["item_id"] == deleted_conversation["doomed"]

    # Both replicas tell the same history; the default order is asc.
    other = ok(httpx.get(f"{api_urls[1]}/v1/conversations/{conv_id}/events?limit=100"))
    assert other == body


def test_history_paging_asc_and_desc(deleted_conversation, api_urls, http):
    conv_id = deleted_conversation["id"]
    url = f"/v1/conversations/{conv_id}/events"
    full = history(http, conv_id)
    seqs = [e["seq"] for e in full]

    walked: list[dict[str, Any]] = []
    after = None
    for _ in range(len(full)):
        params: dict[str, Any] = {"limit": 2}
        if after is not None:
            params["after"] = after
        page = ok(http.get(url, params=params))
        assert 1 <= len(page["data"]) <= 2
        assert page["first_id"] == page["data"][0]["seq"]
        assert page["last_id"] == page["data"][-1]["seq"]
        walked += page["data"]
        after = page["last_id"]
        if not page["has_more"]:
            break
    assert walked == full, "limit=2 pages must walk the history exactly once"
    # has_more is exact: a page that ends on the last event says there is no more.
    end = ok(http.get(url, params={"limit": 1, "after": seqs[-2]}))
    assert end["has_more"] is False and [e["seq"] for e in end["data"]] == [seqs[-1]]
    assert ok(http.get(url, params={"after": seqs[-1]}))["data"] == []

    desc = ok(http.get(url, params={"order": "desc", "limit": 100}))
    assert desc["data"] == list(reversed(full)) and desc["has_more"] is False
    assert (desc["first_id"], desc["last_id"]) == (seqs[-1], seqs[0])

    top = ok(http.get(url, params={"order": "desc", "limit": 3}))
    assert [e["seq"] for e in top["data"]] == seqs[::-1][:3] and top["has_more"] is True

    older = ok(http.get(url, params={"order": "desc", "after": seqs[4], "limit": 100}))
    assert [e["seq"] for e in older["data"]] == seqs[:4][::-1]
    assert older["has_more"] is False
    older2 = ok(http.get(url, params={"order": "desc", "after": seqs[4], "limit": 2}))
    assert [e["seq"] for e in older2["data"]] == [seqs[3], seqs[2]] and older2["has_more"]

    newer = ok(http.get(url, params={"after": seqs[4], "limit": 100}))
    assert [e["seq"] for e in newer["data"]] == seqs[5:]

    # Walk desc with after=<last seq seen> too.
    walked_desc: list[int] = []
    after = None
    while True:
        params = {"limit": 2, "order": "desc"}
        if after is not None:
            params["after"] = after
        page = ok(http.get(url, params=params))
        walked_desc += [e["seq"] for e in page["data"]]
        after = page["last_id"]
        if not page["has_more"]:
            break
        assert len(walked_desc) <= len(seqs)
    assert walked_desc == seqs[::-1]


def test_history_default_limit_is_20(client, http):
    conv = client.conversations.create(items=[msg(f"m{n}") for n in range(20)])
    client.conversations.items.create(conversation_id=conv.id, items=[msg("x"), msg("y")])
    page = ok(http.get(f"/v1/conversations/{conv.id}/events"))
    assert len(page["data"]) == 20 and page["has_more"] is True
    assert page["data"][0]["type"] == "ConversationCreated"
    rest = ok(http.get(f"/v1/conversations/{conv.id}/events", params={"after": page["last_id"]}))
    assert len(rest["data"]) == 3 and rest["has_more"] is False
    assert_chain(page["data"] + rest["data"])


def test_history_errors(deleted_conversation, http):
    conv_id = deleted_conversation["id"]
    assert_error(http.get("/v1/conversations/conv_doesnotexist123/events"), 404)
    assert_error(http.get("/v1/conversations/conv_doesnotexist123/events", headers=SSE), 404)
    assert_error(http.get("/v1/conversations/not.a.safe*id/events"), 404)
    url = f"/v1/conversations/{conv_id}/events"
    for bad in (0, -1, 101, "ten"):
        assert_error(http.get(url, params={"limit": bad}), 400, "limit")
        assert_error(http.get("/v1/events", params={"limit": bad}), 400, "limit")
    assert_error(http.get(url, params={"order": "sideways"}), 400, "order")
    assert_error(http.get(url, params={"after": -1}), 400, "after")
    assert_error(http.get(url, params={"after": "evt_abc"}), 400, "after")
    assert_error(http.get("/v1/events", params={"after": -5}), 400, "after")
    assert_error(http.get(url, headers={**SSE, "Last-Event-ID": "abc"}), 400, "Last-Event-ID")
    # The limit is 1..100 inclusive.
    assert len(ok(http.get(url, params={"limit": 1}))["data"]) == 1
    assert len(ok(http.get(url, params={"limit": 100}))["data"]) == 9


def test_history_of_deleted_conversation_as_sse(deleted_conversation, http, api_urls):
    conv_id = deleted_conversation["id"]
    full = history(http, conv_id)
    url = f"{api_urls[0]}/v1/conversations/{conv_id}/events"
    with Stream(url, stream="true") as s:
        assert s.response.status_code == 200
        assert s.response.headers["content-type"].startswith("text/event-stream")
        got = s.take(len(full))
    for frame, event in zip(got, full, strict=True):
        assert_frame_matches(frame, event)


# --- 2. The whole log ------------------------------------------------------------------------


def test_all_events_pages_across_conversations_in_log_order(client, client2, http):
    start = last_log_seq(http)
    a = client.conversations.create(metadata={"who": "a"})
    b = client2.conversations.create(metadata={"who": "b"})
    client.conversations.items.create(conversation_id=a.id, items=[msg("a1")])
    client2.conversations.items.create(conversation_id=b.id, items=[msg("b1"), msg("b2")])
    client.conversations.update(a.id, metadata={"who": "a2"})
    client2.conversations.delete(b.id)

    body = ok(http.get("/v1/events", params={"after": start, "limit": 100}))
    mine = [e for e in body["data"] if e["conversation_id"] in (a.id, b.id)]
    seqs = [e["seq"] for e in body["data"]]
    assert seqs == sorted(set(seqs)) and seqs[0] > start
    assert [(e["conversation_id"], e["type"]) for e in mine] == [
        (a.id, "ConversationCreated"),
        (b.id, "ConversationCreated"),
        (a.id, "ItemAdded"),
        (b.id, "ItemAdded"),
        (b.id, "ItemAdded"),
        (a.id, "MetadataReplaced"),
        (b.id, "ConversationDeleted"),
    ]
    # Same events as each conversation's own history.
    assert [e for e in mine if e["conversation_id"] == a.id] == history(http, a.id)
    assert [e for e in mine if e["conversation_id"] == b.id] == history(http, b.id)
    assert (body["first_id"], body["last_id"]) == (seqs[0], seqs[-1])

    # after=<seq> starts right after it.
    mid = mine[2]["seq"]
    rest = ok(http.get("/v1/events", params={"after": mid, "limit": 100}))["data"]
    assert rest == [e for e in body["data"] if e["seq"] > mid]

    # Paging with limit=2 walks the same list exactly once.
    walked: list[dict[str, Any]] = []
    after = start
    for _ in range(len(body["data"])):
        page = ok(http.get("/v1/events", params={"after": after, "limit": 2}))
        walked += page["data"]
        after = page["last_id"]
        if not page["has_more"]:
            break
    assert walked == body["data"]

    # Newest first.
    assert_desc_matches_asc(http, start, mid)


def assert_desc_matches_asc(http: httpx.Client, start: int, mid: int) -> None:
    """order=desc on the whole log agrees with the asc list of everything after `start`."""
    asc: list[dict[str, Any]] = []
    after = start
    while True:
        page = ok(http.get("/v1/events", params={"after": after, "limit": 100}))
        asc += page["data"]
        if not page["has_more"]:
            break
        after = page["last_id"]
    newest = list(reversed(asc))
    desc = ok(http.get("/v1/events", params={"order": "desc", "limit": 3}))
    assert [e["seq"] for e in desc["data"]] == [e["seq"] for e in newest[:3]], (
        "order=desc must start at the newest event of the log"
    )
    assert desc["data"] == newest[:3] and desc["has_more"] is True
    assert (desc["first_id"], desc["last_id"]) == (newest[0]["seq"], newest[2]["seq"])
    older = ok(http.get("/v1/events", params={"order": "desc", "after": mid, "limit": 2}))
    assert older["data"] == [e for e in newest if e["seq"] < mid][:2]
    assert older["has_more"] is (start > 0 or len([e for e in newest if e["seq"] < mid]) > 2)


@pytest.mark.timeout(90)
async def test_all_events_desc_many_subjects(api_urls, http):
    """Each conversation has a subject per event type, so a busy log has thousands of
    subjects; newest-first must still start at the newest event."""
    start = last_log_seq(http)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=40)) as w:
        sem = asyncio.Semaphore(40)

        async def create(n: int) -> None:
            async with sem:
                r = await w.post(
                    f"{api_urls[n % 2]}/v1/conversations", json={"items": [msg(f"c{n}")]}
                )
                assert r.status_code == 200, r.text

        # 520 conversations x 2 event types: more than 1024 new subjects.
        await asyncio.gather(*(create(n) for n in range(520)))
    assert_desc_matches_asc(http, start, start + 500)


# --- 3. SSE: history, then live, then resume -------------------------------------------------


def test_sse_history_then_live_then_resume(client, client2, http, api_urls):
    conv = client.conversations.create(items=[msg("h1"), msg("h2")])
    url = f"{api_urls[0]}/v1/conversations/{conv.id}/events"
    full = history(http, conv.id)
    assert len(full) == 3

    with Stream(url, headers=SSE) as s:
        assert s.response.status_code == 200
        assert s.response.headers["content-type"].startswith("text/event-stream")
        first = s.take(3)
        for frame, event in zip(first, full, strict=True):
            assert_frame_matches(frame, event)
        last = int(first[-1]["id"])

        # Live: each write from another thread (and another replica) arrives as it happens.
        for n in range(3):
            writer = client2 if n % 2 else client
            result: dict[str, Any] = {}

            def write(writer: OpenAI = writer, n: int = n, result: dict = result) -> None:
                result["item"] = writer.conversations.items.create(
                    conversation_id=conv.id, items=[msg(f"live{n}")]
                ).data[0]

            thread = threading.Thread(target=write)
            thread.start()
            frame = s.next()
            thread.join(timeout=15)
            assert "item" in result
            assert frame["event"] == "ItemAdded"
            assert int(frame["id"]) > last
            assert frame["data"]["seq"] == int(frame["id"])
            assert frame["data"]["item"]["id"] == result["item"].id
            assert frame["data"]["item"]["content"][0]["text"] == f"live{n}"
            last = int(frame["id"])

    # Written while nobody listens.
    client.conversations.items.create(conversation_id=conv.id, items=[msg("gap1"), msg("gap2")])
    client2.conversations.update(conv.id, metadata={"while": "away"})
    missed = [e for e in history(http, conv.id) if e["seq"] > last]
    assert [e["type"] for e in missed] == ["ItemAdded", "ItemAdded", "MetadataReplaced"]

    # Resume on the other replica with Last-Event-ID: exactly the missed events, then live.
    with Stream(
        f"{api_urls[1]}/v1/conversations/{conv.id}/events",
        headers={**SSE, "Last-Event-ID": str(last)},
    ) as s:
        resumed = s.take(len(missed))
        for frame, event in zip(resumed, missed, strict=True):
            assert_frame_matches(frame, event)
        sentinel = client.conversations.items.create(
            conversation_id=conv.id, items=[msg("sentinel")]
        ).data[0]
        nxt = s.next()  # nothing repeated or extra between the missed events and this
        assert nxt["event"] == "ItemAdded" and nxt["data"]["item"]["id"] == sentinel.id
        assert int(nxt["id"]) > int(resumed[-1]["id"])

    final = history(http, conv.id)
    # `?stream=true` without the Accept header, and `after` wins over Last-Event-ID.
    with Stream(url, headers={"Last-Event-ID": str(final[0]["seq"])}, stream="true") as s:
        got = s.take(len(final) - 1)
        assert [int(f["id"]) for f in got] == [e["seq"] for e in final[1:]]
    with Stream(url, headers={**SSE, "Last-Event-ID": "0"}, after=final[-2]["seq"]) as s:
        assert_frame_matches(s.next(), final[-1])


def test_sse_whole_log_resumes_with_last_event_id(client, http, api_urls):
    start = last_log_seq(http)
    conv = client.conversations.create(items=[msg("x")])
    with Stream(f"{api_urls[1]}/v1/events", headers=SSE, after=start) as s:
        got = s.take(2)
    assert [f["event"] for f in got] == ["ConversationCreated", "ItemAdded"]
    assert all(f["data"]["conversation_id"] == conv.id for f in got)
    client.conversations.items.create(conversation_id=conv.id, items=[msg("y")])
    with Stream(f"{api_urls[0]}/v1/events", headers={**SSE, "Last-Event-ID": got[-1]["id"]}) as s:
        nxt = s.next()
    assert nxt["event"] == "ItemAdded" and nxt["data"]["item"]["content"][0]["text"] == "y"
    assert int(nxt["id"]) > int(got[-1]["id"])


# --- 4. A subscriber and 20 concurrent writers ------------------------------------------------


@pytest.mark.timeout(90)
async def test_subscriber_sees_every_event_of_20_concurrent_writers_once_in_order(api_urls, http):
    start = last_log_seq(http)
    received: list[Frame] = []
    connected = asyncio.Event()

    async def subscribe() -> None:
        timeout = httpx.Timeout(READ_TIMEOUT * 3, connect=5.0)
        async with (
            httpx.AsyncClient(timeout=timeout) as sub,
            sub.stream(
                "GET", f"{api_urls[0]}/v1/events", headers=SSE, params={"after": start}
            ) as response,
        ):
            assert response.status_code == 200
            connected.set()

            parser = FrameParser()
            async for line in response.aiter_lines():
                frame = parser.feed(line)
                if frame is not None:
                    received.append(frame)

    task = asyncio.create_task(subscribe())
    try:
        await asyncio.wait_for(connected.wait(), 10)
        async with httpx.AsyncClient(timeout=60) as w:
            shared = (await w.post(f"{api_urls[1]}/v1/conversations", json={})).json()["id"]

            async def add(base: str, conv: str, text: str) -> None:
                r = await w.post(
                    f"{base}/v1/conversations/{conv}/items", json={"items": [msg(text)]}
                )
                assert r.status_code == 200, r.text

            async def writer(n: int) -> str:
                base = api_urls[n % 2]
                r = await w.post(f"{base}/v1/conversations", json={"items": [msg(f"w{n}-0")]})
                assert r.status_code == 200, r.text
                conv = r.json()["id"]
                for k in range(1, 4):
                    await add(base, conv, f"w{n}-{k}")
                    if k < 3:
                        await add(api_urls[(n + k) % 2], shared, f"w{n}-shared-{k}")
                return conv

            convs = await asyncio.gather(*(writer(n) for n in range(20)))
        expected = {c: history(http, c) for c in [*convs, shared]}
        assert len(expected[shared]) == 1 + 40
        assert all(len(expected[c]) == 5 for c in convs)
        wanted = {e["seq"] for events in expected.values() for e in events}

        deadline = time.monotonic() + 20
        while not wanted <= {int(f["id"]) for f in received}:
            assert not task.done(), task.exception() if task.done() else None
            missing = len(wanted - {int(f["id"]) for f in received})
            assert time.monotonic() < deadline, f"{missing} events never arrived on the stream"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # let any duplicate or late extra frame show up
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    ids = [int(f["id"]) for f in received]
    assert len(ids) == len(set(ids)), "duplicate frames"
    assert ids == sorted(ids), "frames out of log order"
    assert ids[0] > start
    for frame in received:
        assert frame["data"]["seq"] == int(frame["id"])
        assert frame["event"] == frame["data"]["type"]
    for conv, events in expected.items():
        streamed = [f["data"] for f in received if f["data"]["conversation_id"] == conv]
        assert streamed == events, f"stream and history disagree for {conv}"
        assert_chain(events)


# --- 5. as_of -----------------------------------------------------------------------------------


def test_as_of_reads_the_past(client, client2, http, api_urls):
    steps: list[dict[str, Any]] = []

    def record(conv_id: str) -> None:
        events = history(http, conv_id)
        steps.append(
            {
                "seq": events[-1]["seq"],
                "event": events[-1],
                "conversation": ok(http.get(f"/v1/conversations/{conv_id}")),
                "items": ok(
                    http.get(
                        f"/v1/conversations/{conv_id}/items",
                        params={"order": "asc", "limit": 100},
                    )
                ),
            }
        )

    conv = client.conversations.create(metadata={"v": "0"}, items=[msg("one"), msg("two")])
    cid = conv.id
    record(cid)
    client2.conversations.items.create(conversation_id=cid, items=[msg("three"), msg("four")])
    record(cid)
    client.conversations.update(cid, metadata={"v": "1", "extra": "yes"})
    record(cid)
    doomed = steps[0]["items"]["data"][0]["id"]
    client2.conversations.items.delete(doomed, conversation_id=cid)
    record(cid)
    client.conversations.items.create(conversation_id=cid, items=[msg("five")])
    record(cid)
    assert [len(s["items"]["data"]) for s in steps] == [2, 4, 4, 3, 4]
    assert [s["conversation"]["metadata"]["v"] for s in steps] == ["0", "0", "1", "1", "1"]
    client.conversations.delete(cid)
    full = history(http, cid)
    deleted_at = full[-1]
    assert deleted_at["type"] == "ConversationDeleted"
    assert http.get(f"/v1/conversations/{cid}").status_code == 404

    conv_url = f"/v1/conversations/{cid}"
    items_url = f"{conv_url}/items"

    def state(as_of: Any) -> tuple[httpx.Response, httpx.Response]:
        return (
            http.get(conv_url, params={"as_of": as_of}),
            http.get(items_url, params={"as_of": as_of, "order": "asc", "limit": 100}),
        )

    # Every recorded position reads back the live state of that moment, after deletion.
    for n, step in enumerate(steps):
        got_conv, got_items = state(step["seq"])
        assert ok(got_conv) == step["conversation"], f"step {n}"
        assert ok(got_items) == step["items"], f"step {n}"
        # Also on the other replica, and with the default (desc) order.
        desc = ok(
            httpx.get(
                f"{api_urls[1]}{items_url}",
                params={"as_of": step["seq"], "limit": 100},
            )
        )
        assert desc["data"] == list(reversed(step["items"]["data"]))

    # A position between two steps (here: the creation itself, before its items).
    created = full[0]
    assert created["type"] == "ConversationCreated"
    got_conv, got_items = state(created["seq"])
    assert ok(got_conv) == steps[0]["conversation"]
    assert ok(got_items)["data"] == []
    got_conv, got_items = state(full[1]["seq"])
    assert [i["id"] for i in ok(got_items)["data"]] == [steps[0]["items"]["data"][0]["id"]]

    # An RFC 3339 time: the `time` of a step's last event gives the state at that event.
    for n, step in enumerate(steps):
        when = step["event"]["time"]
        got_conv, got_items = state(when)
        assert ok(got_conv) == step["conversation"], f"step {n} at {when}"
        assert ok(got_items) == step["items"], f"step {n} at {when}"
    # The same instant with an explicit offset, in another zone.
    metadata_time = datetime.fromisoformat(steps[2]["event"]["time"])
    elsewhere = metadata_time.astimezone(timezone(timedelta(hours=2))).isoformat()
    got_conv, got_items = state(elsewhere)
    assert ok(got_conv) == steps[2]["conversation"]
    assert ok(got_items) == steps[2]["items"]
    # Without an offset the time is UTC.
    naive = metadata_time.astimezone(UTC).replace(tzinfo=None).isoformat()
    assert ok(http.get(conv_url, params={"as_of": naive})) == steps[2]["conversation"]
    # Just before the metadata changed: the state of step 1.
    got_conv, _ = state((metadata_time - timedelta(microseconds=1)).isoformat())
    assert ok(got_conv) == steps[1]["conversation"]

    # Before creation: not found (position and time).
    for before in (created["seq"] - 1, 0):
        got_conv, got_items = state(before)
        assert_error(got_conv, 404)
        assert_error(got_items, 404)
    created_time = datetime.fromisoformat(created["time"])
    got_conv, got_items = state((created_time - timedelta(seconds=1)).isoformat())
    assert_error(got_conv, 404)
    assert_error(got_items, 404)

    # At or after the deletion: not found (position and time).
    for after in (deleted_at["seq"], deleted_at["seq"] + 1000, deleted_at["time"]):
        got_conv, got_items = state(after)
        assert_error(got_conv, 404)
        assert_error(got_items, 404)

    # A bad as_of is a 400 naming the parameter.
    item_url = f"{items_url}/{doomed}"
    for bad in ("yesterday", "-1", "12abc", ""):
        for url in (conv_url, items_url, item_url):
            assert_error(http.get(url, params={"as_of": bad}), 400, "as_of")

    # A deleted item, in a deleted conversation, at a time it existed.
    doomed_then = steps[2]["items"]["data"][0]
    assert doomed_then["id"] == doomed
    assert ok(http.get(item_url, params={"as_of": steps[2]["seq"]})) == doomed_then
    assert ok(http.get(item_url, params={"as_of": steps[2]["event"]["time"]})) == doomed_then
    assert_error(http.get(item_url, params={"as_of": steps[3]["seq"]}), 404)
    assert_error(http.get(item_url, params={"as_of": deleted_at["seq"]}), 404)
    added_later = steps[4]["items"]["data"][-1]["id"]
    assert_error(http.get(f"{items_url}/{added_later}", params={"as_of": steps[3]["seq"]}), 404)
    assert (
        ok(http.get(f"{items_url}/{added_later}", params={"as_of": steps[4]["seq"]}))
        == steps[4]["items"]["data"][-1]
    )


def test_as_of_unknown_conversation_and_live_conversation(client, http):
    assert_error(http.get("/v1/conversations/conv_neverexisted42", params={"as_of": 10}), 404)
    conv = client.conversations.create(metadata={"k": "v"}, items=[msg("a")])
    live = ok(http.get(f"/v1/conversations/{conv.id}"))
    events = history(http, conv.id)
    # A position far beyond the log's end is simply "now".
    assert ok(http.get(f"/v1/conversations/{conv.id}", params={"as_of": 10**12})) == live
    # as_of at a position of another conversation's event still folds only this one.
    other = client.conversations.create(metadata={"other": "1"})
    client.conversations.update(conv.id, metadata={"k": "w"})
    other_seq = history(http, other.id)[0]["seq"]
    assert other_seq > events[-1]["seq"]
    assert ok(http.get(f"/v1/conversations/{conv.id}", params={"as_of": other_seq})) == live


def test_a_time_never_splits_an_atomic_write(client, http):
    """The events of one command share one time, so `as_of` by time shows all of a batch or
    none of it (each event used to keep its own construction time, microseconds apart)."""
    conv = client.conversations.create(items=[msg("a"), msg("b")])
    client.conversations.items.create(conv.id, items=[msg("c"), msg("d"), msg("e")])
    events = history(http, conv.id)
    assert len({e["time"] for e in events[:3]}) == 1
    assert len({e["time"] for e in events[3:]}) == 1
    when = datetime.fromisoformat(events[3]["time"]).astimezone(UTC)
    for t in (when - timedelta(microseconds=1), when):
        as_of = t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        page = ok(http.get(f"/v1/conversations/{conv.id}/items", params={"as_of": as_of}))
        assert len(page["data"]) in (2, 5)


def test_as_of_accepts_lowercase_rfc3339_time(client, http):
    """RFC 3339 section 5.6: "T" and "Z" may alternatively be lower case "t" and "z"."""
    conv = client.conversations.create(metadata={"k": "v"})
    created = history(http, conv.id)[0]
    when = datetime.fromisoformat(created["time"]).astimezone(UTC)
    upper = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    live = ok(http.get(f"/v1/conversations/{conv.id}", params={"as_of": upper}))
    assert live["metadata"] == {"k": "v"}
    lower = upper.replace("T", "t").replace("Z", "z")
    assert ok(http.get(f"/v1/conversations/{conv.id}", params={"as_of": lower})) == live


async def test_an_unknown_event_type_in_the_log_breaks_no_read(client, http, nats_url):
    """A newer writer's event type: live reads, as_of and history all still answer."""
    import json as _json

    from events.connection import connect

    conv = client.conversations.create(metadata={"k": "v"})
    nc = await connect([nats_url], "test-future")
    try:
        ack = await nc.jetstream().publish(
            f"conv.{conv.id}.future_thing",
            _json.dumps(
                {"id": "evt_future", "type": "FutureThing", "conversation_id": conv.id}
            ).encode(),
        )
    finally:
        await nc.close()
    assert http.get(f"/v1/conversations/{conv.id}").json()["metadata"] == {"k": "v"}
    r = http.get(f"/v1/conversations/{conv.id}", params={"as_of": ack.seq})
    assert r.status_code == 200 and r.json()["metadata"] == {"k": "v"}
    types = [e["type"] for e in http.get(f"/v1/conversations/{conv.id}/events").json()["data"]]
    assert types == ["ConversationCreated", "FutureThing"]
    # the conversation still takes writes and reads after it
    client.conversations.update(conversation_id=conv.id, metadata={"k": "w"})
    assert client.conversations.retrieve(conv.id).metadata == {"k": "w"}


def test_a_live_subscription_answers_before_any_event(client, http, api_urls):
    """The 200 and its headers come at once, not with the first event (which may be long
    in coming): a subscriber knows it is subscribed."""
    conv = client.conversations.create()
    last = history(http, conv.id)[-1]["seq"]
    url = f"{api_urls[0]}/v1/conversations/{conv.id}/events"
    began = time.monotonic()
    with Stream(url, headers={**SSE, "Last-Event-ID": str(last)}) as s:
        assert s.response.status_code == 200
        assert time.monotonic() - began < 2


async def test_a_log_with_an_unmarked_event_after_a_delete_still_reads_deleted(
    client, http, nats_url
):
    """Logs written before the deleted mark (Convstore-Conversation-Deleted) may hold a
    response's outcome after a ConversationDeleted, unmarked: the head then looks live, and
    the reads still answer 404 from the view, which stays deleted."""
    from events.connection import connect
    from events.ids import new_response_id
    from events.schema import ResponseCancelled
    from events.store import EventStore

    conv = client.conversations.create(items=[msg("a")])
    client.conversations.delete(conv.id)
    nc = await connect([nats_url], "test-old-writer")
    try:
        store = EventStore(nc, nc.jetstream())
        head = await store.head(conv.id)
        old = ResponseCancelled(conversation_id=conv.id, response_id=new_response_id(conv.id))
        await store.append([old], head.seq, head.hash, head.tenant)  # as before: no mark
        assert not (await store.head(conv.id)).gone
    finally:
        await nc.close()
    for path in (f"/v1/conversations/{conv.id}", f"/v1/conversations/{conv.id}/items"):
        assert await asyncio.to_thread(lambda p=path: http.get(p).status_code) == 404
