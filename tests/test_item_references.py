"""`{"type": "item_reference", "id": ...}` input items, through the official SDK: a
reference to a stored item (of a conversation, or of a stored response without one) is
resolved to a copy of it under a new id of the thread it is added to; a reference to an
item that is not stored, gone, or another tenant's is OpenAI's 404, and writes nothing."""

import asyncio
import time
import uuid
from functools import partial
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from api.item_references import not_stored
from events.connection import connect
from events.ids import item_thread, new_id
from events.schema import ItemAdded
from events.store import EventStore
from tests.conftest import secure_client

FAKE = "fake-model"


def token() -> str:
    return uuid.uuid4().hex[:10]


def ref(item_id: str) -> Any:
    return {"type": "item_reference", "id": item_id}


def user(text: str) -> Any:
    return {"role": "user", "content": text}


def text_of(item: Any) -> str:
    return "".join(part.text for part in item.content)


def chat_messages(upstream_url: str, marker: str) -> list[dict[str, Any]]:
    """The messages of the one chat request the fake upstream got whose last message
    mentions `marker`."""
    calls = httpx.get(upstream_url.removesuffix("/v1") + "/_requests").json()
    (call,) = [c for c in calls if marker in str(c["messages"][-1].get("content"))]
    return call["messages"]  # type: ignore[no-any-return]


def last_event(http: httpx.Client) -> str:
    return http.get("/v1/events", params={"order": "desc", "limit": 1}).json()["last_id"]  # type: ignore[no-any-return]


def refused(http: httpx.Client, path: str, body: dict[str, Any], item_id: str, param: str) -> None:
    """OpenAI's 404 for a reference to no stored item, and nothing appended."""
    before = last_event(http)
    r = http.post(path, json=body)
    assert r.status_code == 404, r.text
    assert r.json()["error"] == {
        "message": f"Item with id '{item_id}' not found. Items are not persisted when `store` "
        "is set to false. Try again with `store` set to true, or remove this item from "
        "your input.",
        "type": "invalid_request_error",
        "param": param,
        "code": None,
    }
    assert last_event(http) == before


def test_a_conversation_item_referenced_by_a_stateless_response(
    client: OpenAI, upstream_url: str
) -> None:
    t = token()
    conv = client.conversations.create(items=[{"role": "user", "content": f"I am Ada {t}."}])
    (item,) = client.conversations.items.list(conv.id).data
    assert item_thread(item.id) == conv.id
    typeless: Any = {"id": item.id}  # the SDK's ItemReference: its `type` is optional
    r = client.responses.create(model=FAKE, input=[typeless, user(f"Who am I? {t}")])
    assert r.status == "completed", r.error
    assert r.output_text == f"fake: Who am I? {t} [2 messages]"
    assert [(m["role"], m["content"]) for m in chat_messages(upstream_url, f"Who am I? {t}")] == [
        ("user", f"I am Ada {t}."),
        ("user", f"Who am I? {t}"),
    ]
    copied, _ = client.responses.input_items.list(r.id, order="asc").data
    assert text_of(copied) == f"I am Ada {t}." and copied.role == "user"
    assert copied.id != item.id and item_thread(copied.id) == r.id
    assert item_thread(r.output[0].id) == r.id  # the worker's items name the thread too


def test_references_carry_a_stateless_tool_loop(client: OpenAI, upstream_url: str) -> None:
    """OpenAI's guide with references instead of the output objects: the call comes from
    the stored response, so the output in the same input is not an orphan."""
    t = token()
    tools: Any = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    first = client.responses.create(model=FAKE, input=f"TOOL weather {t}", tools=tools)
    (call,) = first.output
    assert call.type == "function_call"
    (asked,) = client.responses.input_items.list(first.id).data
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}
    second = client.responses.create(
        model=FAKE, input=[ref(asked.id), ref(call.id), output], tools=tools
    )
    assert second.status == "completed", second.error
    listed = client.responses.input_items.list(second.id, order="asc").data
    assert [i.type for i in listed] == ["message", "function_call", "function_call_output"]
    assert listed[1].call_id == call.call_id and listed[1].id != call.id  # type: ignore[union-attr]


def test_items_added_to_a_conversation_by_reference(client: OpenAI) -> None:
    """items.create and conversations.create take references too: the copy is the new
    conversation's own item; the original stays where it was."""
    t = token()
    source = client.conversations.create(items=[{"role": "user", "content": f"note {t}"}])
    (item,) = client.conversations.items.list(source.id).data
    answer = client.responses.create(model=FAKE, input=f"plain {t}")
    target = client.conversations.create(items=[ref(answer.output[0].id)])
    added = client.conversations.items.create(target.id, items=[ref(item.id)]).data
    listed = client.conversations.items.list(target.id, order="asc").data
    assert [(i.role, text_of(i)) for i in listed] == [  # type: ignore[union-attr]
        ("assistant", f"fake: plain {t} [1 messages]"),
        ("user", f"note {t}"),
    ]
    assert added[0].id == listed[1].id != item.id
    assert {item_thread(i.id) for i in listed} == {target.id}
    assert client.conversations.items.retrieve(listed[1].id, conversation_id=target.id).id
    assert [i.id for i in client.conversations.items.list(source.id).data] == [item.id]
    # an item referenced in its own conversation is added again, under a new id
    again = client.conversations.items.create(source.id, items=[ref(item.id)]).data
    assert again[0].id != item.id and len(client.conversations.items.list(source.id).data) == 2


def test_a_reference_to_no_stored_item_is_a_404_that_writes_nothing(
    client: OpenAI, http: httpx.Client
) -> None:
    t = token()
    unstored = client.responses.create(model=FAKE, input=f"hi {t}", store=False)
    conv = client.conversations.create(items=[{"role": "user", "content": "a"}])
    (deleted,) = client.conversations.items.list(conv.id).data
    client.conversations.items.create(conv.id, items=[{"role": "user", "content": "b"}])
    client.conversations.items.delete(deleted.id, conversation_id=conv.id)
    gone = client.conversations.create(items=[{"role": "user", "content": "c"}])
    (in_gone,) = client.conversations.items.list(gone.id).data
    client.conversations.delete(gone.id)
    misplaced = deleted.id[:5] + new_id("conv")[5:] + deleted.id[-16:]  # another thread
    for item_id in (
        unstored.output[0].id,  # store=false: OpenAI's very case
        deleted.id,
        in_gone.id,
        misplaced,
        new_id("msg"),  # an id that names no thread, with no conversation to look in
        "msg_nope",
    ):
        for path, body, param in (
            ("/v1/responses", {"model": FAKE, "input": [user("x"), ref(item_id)]}, "input[1]"),
            (
                "/v1/responses",
                {"model": FAKE, "conversation": conv.id, "input": [ref(item_id)]},
                "input[0]",
            ),
            (f"/v1/conversations/{conv.id}/items", {"items": [ref(item_id)]}, "items[0]"),
            (
                "/v1/conversations",
                {"items": [{"role": "user", "content": "x"}, ref(item_id)]},
                "items[1]",
            ),
        ):
            refused(http, path, body, item_id, param)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=FAKE, input=[ref(deleted.id)])


def test_a_key_wildcard_is_no_item_id(client: OpenAI, http: httpx.Client) -> None:
    """`*` and `>` as ids would match the conversation's last item in its views."""
    conv = client.conversations.create(items=[user("the last item")])
    for item_id in ("*", ">", "msg_*"):
        for path, body, param in (
            (
                "/v1/responses",
                {"model": FAKE, "conversation": conv.id, "input": [ref(item_id)]},
                "input[0]",
            ),
            (f"/v1/conversations/{conv.id}/items", {"items": [ref(item_id)]}, "items[0]"),
        ):
            refused(http, path, body, item_id, param)


def test_the_conversation_or_previous_response_is_checked_before_references(
    http: httpx.Client,
) -> None:
    """Their own errors come first, as without references."""
    missing = new_id("conv")
    r = http.post(f"/v1/conversations/{missing}/items", json={"items": [ref("msg_nope")]})
    assert r.status_code == 404
    assert r.json()["error"]["message"] == f"Conversation with id '{missing}' not found."
    body = {"model": FAKE, "conversation": missing, "input": [ref("msg_nope")]}
    r = http.post("/v1/responses", json=body)
    assert r.status_code == 404
    assert r.json()["error"]["message"] == f"Conversation with id '{missing}' not found."
    body = {"model": FAKE, "previous_response_id": "resp_nope", "input": [ref("msg_nope")]}
    r = http.post("/v1/responses", json=body)
    assert (r.status_code, r.json()["error"]["param"]) == (400, "previous_response_id")


def test_two_input_items_with_one_id_are_refused(client: OpenAI, http: httpx.Client) -> None:
    """OpenAI's 400 rather than a guess at which one was meant; nothing is written."""
    conv = client.conversations.create(items=[user("a")])
    (item,) = client.conversations.items.list(conv.id).data
    listed = item.model_dump(exclude_unset=True)
    for path, body, param in (
        ("/v1/responses", {"model": FAKE, "input": [ref(item.id), ref(item.id)]}, "input"),
        ("/v1/responses", {"model": FAKE, "input": [listed, {"id": item.id}]}, "input"),
        (f"/v1/conversations/{conv.id}/items", {"items": [listed, listed]}, "items"),
    ):
        before = last_event(http)
        r = http.post(path, json=body)
        assert r.status_code == 400, r.text
        assert r.json()["error"] == {
            "message": f"Duplicate item found with id {item.id}. Remove duplicate items from "
            "your input and try again.",
            "type": "invalid_request_error",
            "param": param,
            "code": None,
        }
        assert last_event(http) == before


def test_another_tenants_item_is_not_found(secure_url: str) -> None:
    alice, bob = secure_client(secure_url, "alice"), secure_client(secure_url, "bob")
    conv = alice.conversations.create(items=[{"role": "user", "content": "alice's secret"}])
    (item,) = alice.conversations.items.list(conv.id).data
    answer = alice.responses.create(model="m", input="alice asks")
    for item_id in (item.id, answer.output[0].id):
        # exactly the answer to an id that never existed: nothing says it does
        for send, param in (
            (partial(bob.responses.create, model="m", input=[ref(item_id)]), "input[0]"),
            (partial(bob.conversations.create, items=[ref(item_id)]), "items[0]"),
        ):
            with pytest.raises(openai.NotFoundError) as refused_:
                send()
            assert refused_.value.body == not_stored(item_id, param).body["error"]
        copy = alice.conversations.create(items=[ref(item_id)])
        assert len(alice.conversations.items.list(copy.id).data) == 1
    # an old-format id on alice's conversation: bob learns only that it is not his
    with pytest.raises(openai.NotFoundError) as refused_:
        bob.responses.create(model="m", conversation=conv.id, input=[ref(new_id("msg"))])
    assert refused_.value.body["message"] == f"Conversation with id '{conv.id}' not found."  # type: ignore[index]


async def _add_old_item(nats_url: str, conversation_id: str, text: str) -> str:
    """An item as stored before ids named their thread."""
    nc = await connect([nats_url], "test-old-item")
    try:
        store = EventStore(nc, nc.jetstream())
        item = {
            "id": new_id("msg"),
            "type": "message",
            "status": "completed",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
            "created_at": int(time.time()),
        }
        head = await store.head(conversation_id)
        assert head is not None
        added = ItemAdded(conversation_id=conversation_id, item=item)
        await store.append([added], head.seq, head.hash, tenant=head.tenant)
        return str(item["id"])
    finally:
        await nc.close()


def test_an_old_item_id_is_found_in_the_conversation_it_is_added_to(
    client: OpenAI, http: httpx.Client, nats_url: str
) -> None:
    """Ids made before they named their thread are found where a conversation is named."""
    t = token()
    conv = client.conversations.create()
    old = asyncio.run(_add_old_item(nats_url, conv.id, f"old {t}"))
    assert item_thread(old) is None
    r = client.responses.create(
        model=FAKE, conversation=conv.id, input=[ref(old), user(f"new {t}")]
    )
    assert r.status == "completed", r.error
    texts = [text_of(i) for i in client.conversations.items.list(conv.id, order="asc").data]  # type: ignore[arg-type]
    assert texts == [f"old {t}", f"old {t}", f"new {t}", f"fake: new {t} [3 messages]"]
    refused(http, "/v1/responses", {"model": FAKE, "input": [ref(old)]}, old, "input[0]")


def events_of(http: httpx.Client, thread: str) -> list[dict[str, Any]]:
    r = http.get(f"/v1/conversations/{thread}/events", params={"order": "asc", "limit": 100})
    assert r.status_code == 200, r.text
    return r.json()["data"]  # type: ignore[no-any-return]


def test_the_log_records_what_each_copy_was_copied_from(client: OpenAI, http: httpx.Client) -> None:
    """An auditor replaying a thread sees that an item was added by reference, and which
    stored item it repeats; items added otherwise say `null`."""
    t = token()
    source = client.conversations.create(items=[user(f"quote me {t}")])
    (original,) = client.conversations.items.list(source.id).data
    target = client.conversations.create(items=[ref(original.id), user("own words")])
    (copy, own) = client.conversations.items.list(target.id, order="asc").data
    client.conversations.items.create(target.id, items=[ref(original.id)])
    r = client.responses.create(model=FAKE, conversation=target.id, input=[ref(original.id)])
    assert r.status == "completed", r.error
    added = [e for e in events_of(http, target.id) if e["type"] == "ItemAdded"]
    assert [e["copied_from"] for e in added] == [original.id, None, original.id, original.id, None]
    assert added[0]["item"]["id"] == copy.id and added[1]["item"]["id"] == own.id
    (requested,) = [e for e in events_of(http, target.id) if e["type"] == "ResponseRequested"]
    assert requested["copied_from"] == {requested["input"][0]["id"]: original.id}
    assert [e["copied_from"] for e in events_of(http, source.id) if e["type"] == "ItemAdded"] == [
        None
    ]
