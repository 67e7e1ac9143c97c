"""The Conversations API through real HTTP with the official openai SDK."""

import re

import pytest
from openai import NotFoundError


def texts(item) -> list[str]:
    return [part.text for part in item.content]


def test_create_retrieve_shapes(client, http):
    conv = client.conversations.create(metadata={"user_id": "user_123"})
    assert conv.id.startswith("conv_")
    assert conv.object == "conversation"
    assert isinstance(conv.created_at, int)
    raw = http.get(f"/v1/conversations/{conv.id}").json()
    assert raw == {
        "id": conv.id,
        "object": "conversation",
        "created_at": conv.created_at,
        "metadata": {"user_id": "user_123"},
    }


def test_create_with_items_lists_them_in_order(client):
    conv = client.conversations.create(
        items=[
            {"type": "message", "role": "system", "content": "You are a helpful assistant."},
            {"type": "message", "role": "user", "content": "Hello"},
        ]
    )
    items = client.conversations.items.list(conversation_id=conv.id, order="asc").data
    assert [i.role for i in items] == ["system", "user"]
    assert items[0].content[0].type == "input_text"
    assert texts(items[1]) == ["Hello"]
    desc = client.conversations.items.list(conversation_id=conv.id).data
    assert [i.id for i in desc] == [i.id for i in reversed(items)]


def test_items_create_returns_list_object(client, http):
    conv = client.conversations.create()
    body = http.post(
        f"/v1/conversations/{conv.id}/items",
        json={
            "items": [
                {"type": "message", "role": "user", "content": "a"},
                {"type": "message", "role": "assistant", "content": "b"},
            ]
        },
    ).json()
    assert body["object"] == "list"
    assert body["has_more"] is False
    assert [i["id"] for i in body["data"]] == [body["first_id"], body["last_id"]]
    assert body["data"][1]["content"] == [{"type": "output_text", "text": "b", "annotations": []}]
    assert all(i["id"].startswith("msg_") and i["status"] == "completed" for i in body["data"])


def test_tool_items_round_trip(client):
    conv = client.conversations.create()
    created = client.conversations.items.create(
        conversation_id=conv.id,
        items=[
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "get_weather",
                "arguments": '{"city": "Paris"}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": '{"temp": 21}'},
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "think"}]},
        ],
    ).data
    assert [i.type for i in created] == ["function_call", "function_call_output", "reasoning"]
    assert created[0].id.startswith("fc_")
    got = client.conversations.items.retrieve(item_id=created[0].id, conversation_id=conv.id)
    assert got.name == "get_weather" and got.arguments == '{"city": "Paris"}'
    out = client.conversations.items.retrieve(item_id=created[1].id, conversation_id=conv.id)
    assert out.output == '{"temp": 21}'


def test_an_assistant_messages_phase_round_trips(client, client2):
    """OpenAI asks clients to resend `phase` on assistant messages: it must come back."""
    conv = client.conversations.create()
    (created,) = client.conversations.items.create(
        conversation_id=conv.id,
        items=[{"role": "assistant", "content": "Looking it up.", "phase": "commentary"}],
    ).data
    assert created.phase == "commentary"
    got = client2.conversations.items.retrieve(item_id=created.id, conversation_id=conv.id)
    assert got.phase == "commentary"


def test_other_item_types_accepted_by_type(http):
    conv = http.post("/v1/conversations", json={}).json()
    item = {
        "type": "web_search_call",
        "status": "completed",
        "action": {"type": "search", "query": "nats"},
    }
    r = http.post(f"/v1/conversations/{conv['id']}/items", json={"items": [item]})
    assert r.status_code == 200
    stored = r.json()["data"][0]
    assert stored["id"].startswith("ws_")
    assert stored["action"] == item["action"]


def test_update_replaces_metadata(client, client2):
    conv = client.conversations.create(metadata={"a": "1", "b": "2"})
    updated = client.conversations.update(conversation_id=conv.id, metadata={"c": "3"})
    assert updated.metadata == {"c": "3"}
    assert updated.created_at == conv.created_at
    assert client2.conversations.retrieve(conversation_id=conv.id).metadata == {"c": "3"}


def test_item_delete_returns_conversation_and_hides_item(client):
    conv = client.conversations.create(metadata={"m": "x"})
    a, b = client.conversations.items.create(
        conversation_id=conv.id,
        items=[
            {"type": "message", "role": "user", "content": "keep"},
            {"type": "message", "role": "user", "content": "drop"},
        ],
    ).data
    result = client.conversations.items.delete(conversation_id=conv.id, item_id=b.id)
    assert result.id == conv.id and result.object == "conversation"
    assert result.metadata == {"m": "x"}
    assert [i.id for i in client.conversations.items.list(conversation_id=conv.id)] == [a.id]
    with pytest.raises(NotFoundError):
        client.conversations.items.retrieve(item_id=b.id, conversation_id=conv.id)


def test_deleted_conversation_is_gone_everywhere(client, http):
    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "x"}])
    item_id = client.conversations.items.list(conversation_id=conv.id).data[0].id
    deleted = client.conversations.delete(conversation_id=conv.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (conv.id, True, "conversation.deleted")
    for method, path in [
        ("GET", f"/v1/conversations/{conv.id}"),
        ("POST", f"/v1/conversations/{conv.id}"),
        ("DELETE", f"/v1/conversations/{conv.id}"),
        ("GET", f"/v1/conversations/{conv.id}/items"),
        ("GET", f"/v1/conversations/{conv.id}/items/{item_id}"),
        ("DELETE", f"/v1/conversations/{conv.id}/items/{item_id}"),
    ]:
        r = http.request(method, path, json={"metadata": {}} if method == "POST" else None)
        assert r.status_code == 404, (method, path, r.text)
        assert r.json()["error"]["message"] == f"Conversation with id '{conv.id}' not found."
    r = http.post(
        f"/v1/conversations/{conv.id}/items",
        json={"items": [{"type": "message", "role": "user", "content": "late"}]},
    )
    assert r.status_code == 404


def test_paging_with_after_both_orders(client):
    conv = client.conversations.create()
    ids = []
    for start in range(0, 45, 15):
        batch = [
            {"type": "message", "role": "user", "content": f"m{n}"}
            for n in range(start, start + 15)
        ]
        ids += [
            i.id
            for i in client.conversations.items.create(conversation_id=conv.id, items=batch).data
        ]
    first = client.conversations.items.list(conversation_id=conv.id, limit=20, order="asc")
    assert [i.id for i in first.data] == ids[:20] and first.has_more
    assert first.first_id == ids[0] and first.last_id == ids[19]
    assert [
        i.id
        for i in client.conversations.items.list(
            conversation_id=conv.id, limit=100, order="asc"
        ).data
    ] == ids
    # the SDK's auto-pagination follows `after` with has_more
    assert [
        i.id for i in client.conversations.items.list(conversation_id=conv.id, limit=7, order="asc")
    ] == ids
    assert [i.id for i in client.conversations.items.list(conversation_id=conv.id, limit=7)] == ids[
        ::-1
    ]
    last = client.conversations.items.list(
        conversation_id=conv.id, after=ids[39], limit=5, order="asc"
    )
    assert [i.id for i in last.data] == ids[40:45] and not last.has_more
    back = client.conversations.items.list(conversation_id=conv.id, after=ids[5], order="desc")
    assert [i.id for i in back.data] == ids[4::-1] and not back.has_more


def test_default_limit_is_20(client):
    conv = client.conversations.create()
    for _ in range(2):
        client.conversations.items.create(
            conversation_id=conv.id,
            items=[{"type": "message", "role": "user", "content": "x"}] * 15,
        )
    page = client.conversations.items.list(conversation_id=conv.id)
    assert len(page.data) == 20 and page.has_more


def test_list_conversations_extension(client, http):
    made = [client.conversations.create(metadata={"n": str(n)}).id for n in range(5)]
    client.conversations.delete(conversation_id=made[2])
    page = http.get("/v1/conversations", params={"limit": 4}).json()
    assert page["object"] == "list"
    assert [c["id"] for c in page["data"]] == [made[4], made[3], made[1], made[0]]
    assert page["data"][0]["metadata"] == {"n": "4"}
    after = http.get("/v1/conversations", params={"limit": 2, "after": made[3]}).json()
    assert [c["id"] for c in after["data"]] == [made[1], made[0]]
    asc = http.get(
        "/v1/conversations", params={"limit": 2, "after": made[0], "order": "asc"}
    ).json()
    assert [c["id"] for c in asc["data"]] == [made[1], made[3]]


def test_health_and_readiness(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["nats"] is True


async def test_async_client(aclient):
    conv = await aclient.conversations.create(metadata={"user_id": "user_123"})
    await aclient.conversations.items.create(
        conversation_id=conv.id,
        items=[{"type": "message", "role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    )
    seen = [
        item.content[0].text
        async for item in await aclient.conversations.items.list(conversation_id=conv.id)
    ]
    assert seen == ["Hi"]
    await aclient.conversations.delete(conversation_id=conv.id)


def test_list_conversations_unknown_cursor_is_400(http):
    r = http.get("/v1/conversations", params={"after": "conv_doesnotexist"})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "after"


def test_item_larger_than_a_nats_message_is_413_and_writes_nothing(http):
    conv = http.post("/v1/conversations", json={}).json()["id"]
    big = {"type": "message", "role": "user", "content": "x" * 9_000_000}
    small = {"type": "message", "role": "user", "content": "fits"}
    r = http.post(f"/v1/conversations/{conv}/items", json={"items": [small, big]})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
    assert http.get(f"/v1/conversations/{conv}/items").json()["data"] == []
    ok = http.post(
        f"/v1/conversations/{conv}/items",
        json={"items": [{"type": "message", "role": "user", "content": "y" * 2_000_000}]},
    )
    assert ok.status_code == 200


def test_a_body_under_the_body_limit_whose_event_exceeds_a_nats_message_is_413(http):
    # The 9 MB body above is refused by the body limit (8 MiB) before it is parsed; this
    # one passes it, and its event is still larger than the server's max_payload - 1 KiB.
    conv = http.post("/v1/conversations", json={}).json()["id"]
    item = {"type": "message", "role": "user", "content": "z" * 8_388_000}
    r = http.post(f"/v1/conversations/{conv}/items", json={"items": [item]})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
    assert "exceeds" in r.json()["error"]["message"]
    assert "limit of 8388608 bytes" not in r.json()["error"]["message"]
    assert http.get(f"/v1/conversations/{conv}/items").json()["data"] == []


def test_every_response_names_its_request(client, http):
    """OpenAI's `x-request-id`: the SDK hands it out as `_request_id`; one per request, on
    successes, errors and the fast lane's answers alike."""
    conv = client.conversations.create()
    assert re.fullmatch(r"req_[0-9a-f]{32}", conv._request_id or "")
    page = client.conversations.items.list(conv.id)
    assert re.fullmatch(r"req_[0-9a-f]{32}", page._request_id or "")
    responses = [
        http.get(f"/v1/conversations/{conv.id}"),
        http.get(f"/v1/conversations/{conv.id}"),
        http.get("/v1/conversations/conv_nope"),
        http.post("/v1/conversations", content=b"{", headers={"content-type": "application/json"}),
        http.get("/healthz"),
    ]
    assert [r.status_code for r in responses] == [200, 200, 404, 400, 200]
    ids = [r.headers.get("x-request-id", "") for r in responses]
    assert all(re.fullmatch(r"req_[0-9a-f]{32}", i) for i in ids), ids
    assert len(set(ids)) == len(ids)


def test_asyncapi_document_is_served(http):
    doc = http.get("/v1/asyncapi.json").json()
    assert doc["asyncapi"].startswith("3.")
    addresses = [c["address"] for c in doc["channels"].values()]
    assert "conv.{conversation_id}.item_added" in addresses
