"""Erasure: a purged conversation leaves nothing but the record that it was purged."""

import json

from events.chain import ChainVerifier
from events.connection import connect
from events.history import History
from events.purge import purge
from events.schema import Actor
from events.store import EventStore
from events.subjects import STREAM_NAME
from projections.active import current, meta_bucket
from tests.test_projector import kv_snapshot

SECRET = "my card number is 4111 1111 1111 1111"


async def everything(history: History) -> list:
    out, after = [], 0
    while True:
        page, more = await history.page(None, after, 100)
        out += page
        if not more:
            return out
        after = page[-1].seq


async def test_purge_erases_events_and_views(client, http, nats_url):
    conv = client.conversations.create(
        metadata={"who": "alice"},
        items=[{"type": "message", "role": "user", "content": SECRET}],
    )
    client.conversations.items.create(
        conversation_id=conv.id,
        items=[{"type": "message", "role": "assistant", "content": "noted " + SECRET}],
    )
    client.conversations.update(conversation_id=conv.id, metadata={"who": "alice", "x": "y"})
    other = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "hi"}]
    )

    nc = await connect([nats_url], "test-purge")
    js = nc.jetstream()
    store = EventStore(nc, js)
    try:
        record = await purge(store, conv.id, Actor(id="dpo", kind="system"), reason="GDPR art. 17")
        assert record.purged_events == 4  # created, two items, metadata
        again = await purge(store, conv.id, Actor(id="dpo", kind="system"))
        assert again.id == record.id  # idempotent: finishing a purge twice changes nothing

        history = History(store)
        events = await everything(history)
        assert not any(SECRET in e.data.decode() for e in events)
        mine = [e.body() for e in events if e.body()["conversation_id"] == conv.id]
        assert [e["type"] for e in mine] == ["ConversationPurged"]
        assert mine[0]["reason"] == "GDPR art. 17" and mine[0]["actor"]["id"] == "dpo"

        verifier = ChainVerifier()
        for e in events:
            verifier.feed(e.seq, e.data)
        assert conv.id not in verifier.broken and other.id not in verifier.broken

        # The views hold nothing of it either, once the projector applied the record.
        listed = http.get("/v1/conversations", params={"limit": 100}).json()["data"]
        assert conv.id not in [c["id"] for c in listed] and other.id in [c["id"] for c in listed]
        generation = await current(await meta_bucket(js))
        views = await kv_snapshot(js, generation.bucket)
        assert not any(conv.id in key for key in views)
        assert not any(SECRET in json.dumps(v) for v in views.values())
        info = await js.stream_info(STREAM_NAME, subjects_filter=f"conv.{conv.id}.>")
        assert sum((info.state.subjects or {}).values()) == 1
    finally:
        await nc.close()

    for method, path in [
        ("GET", f"/v1/conversations/{conv.id}"),
        ("GET", f"/v1/conversations/{conv.id}/items"),
        ("POST", f"/v1/conversations/{conv.id}/items"),
    ]:
        body = {"items": [{"type": "message", "role": "user", "content": "x"}]}
        r = http.request(method, path, json=body if method == "POST" else None)
        assert r.status_code == 404, (method, path, r.text)
    audit = http.get(f"/v1/conversations/{conv.id}/events").json()["data"]
    assert [e["type"] for e in audit] == ["ConversationPurged"]
    assert client.conversations.items.list(conversation_id=other.id).data[0].content[0].text == "hi"
