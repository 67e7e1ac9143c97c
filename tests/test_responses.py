"""The Responses API through the official SDK: conversation state, previous_response_id,
streaming, tools, background and cancel, errors, and validation (against two API
replicas, two model workers and a fake OpenAI-compatible upstream)."""

import asyncio
import threading
import time
import uuid
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI
from openai.types.responses import Response

from events.connection import connect
from events.subjects import RESPONSE_STREAM_NAME, response_stream_subject
from workers.providers.base import ProviderError
from workers.providers.registry import Registry

FAKE = "fake-model"


def token() -> str:
    return uuid.uuid4().hex[:10]


def upstream_calls(upstream_url: str, marker: str) -> list[dict[str, Any]]:
    """The chat requests the fake upstream got whose last message mentions `marker`."""
    calls = httpx.get(upstream_url.removesuffix("/v1") + "/_requests").json()
    return [c for c in calls if marker in str(c["messages"][-1].get("content"))]


def upstream_streams(upstream_url: str, marker: str) -> list[dict[str, Any]]:
    streams = httpx.get(upstream_url.removesuffix("/v1") + "/_streams").json()
    return [s for s in streams if marker in s["text"]]


def wait_status(client: OpenAI, response_id: str, *statuses: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        r = client.responses.retrieve(response_id)
        if r.status in statuses or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def texts(items: list[Any]) -> list[tuple[str, str]]:
    return [(i.role, "".join(c.text for c in i.content)) for i in items]


def test_conversation_state_across_responses(client: OpenAI, client2: OpenAI, upstream_url: str):
    t = token()
    conv = client.conversations.create()
    r1 = client.responses.create(model=FAKE, conversation=conv.id, input=f"Hi, I am Ada {t}.")
    assert r1.status == "completed"
    assert r1.conversation is not None and r1.conversation.id == conv.id
    assert r1.output_text == f"fake: Hi, I am Ada {t}. [1 messages]"
    r2 = client2.responses.create(
        model=FAKE, conversation={"id": conv.id}, input=f"What is my name? {t}"
    )
    # The model saw r1's input and output before r2's input.
    (call,) = upstream_calls(upstream_url, f"What is my name? {t}")
    assert [(m["role"], m["content"]) for m in call["messages"]] == [
        ("user", f"Hi, I am Ada {t}."),
        ("assistant", r1.output_text),
        ("user", f"What is my name? {t}"),
    ]
    items = client2.conversations.items.list(conv.id, order="asc").data
    assert texts(items) == [
        ("user", f"Hi, I am Ada {t}."),
        ("assistant", r1.output_text),
        ("user", f"What is my name? {t}"),
        ("assistant", r2.output_text),
    ]
    # Output items are the conversation's items, same ids.
    assert items[1].id == r1.output[0].id and items[3].id == r2.output[0].id
    assert client2.responses.retrieve(r2.id).model_dump() == r2.model_dump()


def test_response_object_shape(client: OpenAI):
    r = client.responses.create(
        model="gpt-4o-mini",
        input="shape",
        instructions="Be brief.",
        metadata={"k": "v"},
        temperature=0.5,
        top_p=0.9,
        max_output_tokens=64,
        user="u1",
    )
    assert r.id.startswith("resp_") and r.object == "response"
    assert r.status == "completed" and r.error is None and r.incomplete_details is None
    assert r.model == "gpt-4o-mini" and r.instructions == "Be brief."
    assert r.metadata == {"k": "v"} and r.temperature == 0.5 and r.top_p == 0.9
    assert r.max_output_tokens == 64 and r.user == "u1"
    assert r.conversation is None and r.previous_response_id is None
    assert r.background is False and r.store is True and r.parallel_tool_calls is True
    assert r.tool_choice == "auto" and r.tools == [] and r.truncation == "disabled"
    assert r.usage is not None
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens > 0
    (message,) = r.output
    assert message.type == "message" and message.role == "assistant"
    assert message.status == "completed" and message.id.startswith("msg_")
    assert r.output_text == "echo: shape (context: 1 messages)"
    assert r.created_at <= (r.completed_at or 0) <= time.time() + 1
    # Every field the SDK's type requires is there (its own parsing fills gaps with None).
    raw = client.responses.with_raw_response.retrieve(r.id).http_response.json()
    Response.model_validate(raw)


def test_previous_response_chain(client: OpenAI, client2: OpenAI, upstream_url: str):
    t = token()
    r1 = client.responses.create(model=FAKE, input=f"one {t}", instructions="Sys A")
    r2 = client2.responses.create(model=FAKE, input=f"two {t}", previous_response_id=r1.id)
    r3 = client.responses.create(
        model=FAKE, input=f"three {t}", previous_response_id=r2.id, instructions="Sys B"
    )
    assert r2.previous_response_id == r1.id and r3.previous_response_id == r2.id
    (call,) = upstream_calls(upstream_url, f"three {t}")
    # Instructions are the request's own; earlier turns come in order.
    assert [(m["role"], m["content"]) for m in call["messages"]] == [
        ("system", "Sys B"),
        ("user", f"one {t}"),
        ("assistant", r1.output_text),
        ("user", f"two {t}"),
        ("assistant", r2.output_text),
        ("user", f"three {t}"),
    ]
    (call2,) = upstream_calls(upstream_url, f"two {t}")
    assert call2["messages"][0]["role"] == "user"  # r1's instructions are not carried over


def test_previous_response_of_a_conversation(client: OpenAI, upstream_url: str):
    t = token()
    conv = client.conversations.create(items=[{"role": "user", "content": f"seed {t}"}])
    r1 = client.responses.create(model=FAKE, conversation=conv.id, input=f"a {t}")
    client.conversations.items.create(conv.id, items=[{"role": "user", "content": "later"}])
    client.responses.create(model=FAKE, input=f"b {t}", previous_response_id=r1.id)
    (call,) = upstream_calls(upstream_url, f"b {t}")
    # The conversation as r1 saw it, not as it is now.
    assert [m["content"] for m in call["messages"]] == [
        f"seed {t}",
        f"a {t}",
        r1.output_text,
        f"b {t}",
    ]


def test_streaming_events(client: OpenAI, client2: OpenAI):
    conv = client.conversations.create()
    events = list(
        client.responses.create(model=FAKE, conversation=conv.id, input="Stream it", stream=True)
    )
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(types[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    done = events[-1].response
    assert deltas == done.output_text == "fake: Stream it [1 messages]"
    assert events[0].response.status == "in_progress" and done.status == "completed"
    item_id = events[2].item.id
    assert all(getattr(e, "item_id", item_id) == item_id for e in events[2:-1])
    # Any replica can replay the stream afterwards, from the log of streaming events.
    replay = list(client2.responses.retrieve(done.id, stream=True))
    assert [e.model_dump() for e in replay] == [e.model_dump() for e in events]
    items = client2.conversations.items.list(conv.id, order="asc").data
    assert texts(items) == [("user", "Stream it"), ("assistant", deltas)]


def test_a_stream_that_fails_before_any_output_opens_with_response_created(
    client: OpenAI, client2: OpenAI
):
    """The worker fails it at once (its previous response is gone): the stream still opens
    with response.created, or the SDK's stream helper raises instead of yielding events."""
    first = client.responses.create(model=FAKE, input="one")
    second = client.responses.create(model=FAKE, input="two", previous_response_id=first.id)
    client.responses.delete(first.id)
    with client.responses.stream(
        model=FAKE, input="three", previous_response_id=second.id
    ) as stream:
        events = list(stream)  # before: RuntimeError, response.failed before response.created
    final = events[-1].response
    assert [e.type for e in events] == ["response.created", "response.failed"]
    assert [e.sequence_number for e in events] == [0, 1]
    assert events[0].response.status == "in_progress" and events[0].response.error is None
    assert final.status == "failed" and final.error is not None
    assert final.error.code == "invalid_prompt"
    assert events[0].response.id == final.id
    replay = list(client2.responses.retrieve(final.id, stream=True))
    assert [e.model_dump() for e in replay] == [e.model_dump() for e in events]


async def _expire_stream(nats_url: str, response_id: str) -> None:
    nc = await connect([nats_url], "test-expire")
    try:
        js = nc.jetstream()
        await js.purge_stream(RESPONSE_STREAM_NAME, subject=response_stream_subject(response_id))
    finally:
        await nc.drain()


def test_a_finished_response_whose_stream_expired_replays_opened_and_ended(
    client: OpenAI, nats_url: str
):
    """Its streaming events are gone (max_age, or a restart): the replay is how it ended,
    still opened with response.created so the SDK's stream helper takes it."""
    done = client.responses.create(model=FAKE, input="expire me", background=True)
    done = wait_status(client, done.id, "completed")
    asyncio.run(_expire_stream(nats_url, done.id))
    with client.responses.stream(response_id=done.id) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [(e.type, e.sequence_number) for e in events] == [
        ("response.created", 0),
        ("response.completed", 1),
    ]
    assert events[0].response.status == "queued" and events[0].response.output == []
    assert final.status == "completed" and final.output_text == done.output_text
    after = list(client.responses.retrieve(done.id, stream=True, starting_after=0))
    assert [e.type for e in after] == ["response.completed"]


def test_settings_reach_the_upstream_under_chat_completions_names(
    client: OpenAI, upstream_url: str
):
    t = token()
    r = client.responses.create(
        model=FAKE,
        input=f"settings {t}",
        temperature=0.5,
        max_output_tokens=64,
        reasoning={"effort": "low"},
        text={"verbosity": "low"},
    )
    assert r.status == "completed" and r.reasoning is not None and r.reasoning.effort == "low"
    (sent,) = upstream_calls(upstream_url, f"settings {t}")
    assert sent["temperature"] == 0.5 and sent["max_tokens"] == 64
    assert sent["reasoning_effort"] == "low" and sent["verbosity"] == "low"
    plain = client.responses.create(model=FAKE, input=f"plain {t}")
    (sent,) = upstream_calls(upstream_url, f"plain {t}")
    assert "reasoning_effort" not in sent and "verbosity" not in sent
    assert plain.reasoning is None or plain.reasoning.effort is None


def test_a_named_function_choice_reaches_the_upstream(client: OpenAI, upstream_url: str):
    t = token()
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    client.responses.create(
        model=FAKE,
        input=f"choose {t}",
        tools=[tool],
        tool_choice={"type": "function", "name": "get_weather"},
    )
    (sent,) = upstream_calls(upstream_url, f"choose {t}")
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}


def test_function_tool_call_and_output(client: OpenAI, upstream_url: str):
    t = token()
    tools = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    events = list(
        client.responses.create(
            model=FAKE, input=f"TOOL weather {t}", tools=tools, tool_choice="auto", stream=True
        )
    )
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types
    args_done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert args_done.arguments == '{"city": "Paris"}'
    r = events[-1].response
    (call,) = r.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id == "call_fake1" and call.arguments == '{"city": "Paris"}'
    (sent,) = upstream_calls(upstream_url, f"TOOL weather {t}")
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["tool_choice"] == "auto"
    follow = client.responses.create(
        model=FAKE,
        previous_response_id=r.id,
        input=[{"type": "function_call_output", "call_id": "call_fake1", "output": "sunny"}],
        tools=tools,
    )
    assert follow.status == "completed"
    calls = httpx.get(upstream_url.removesuffix("/v1") + "/_requests").json()
    (last,) = [  # the fake upstream names every call call_fake1: this test's has its token
        c
        for c in calls
        if c["messages"][-1].get("tool_call_id") == "call_fake1" and t in str(c["messages"])
    ]
    assert last["messages"][-2]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert last["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_fake1",
        "content": "sunny",
    }


def test_background_cancel_stops_the_upstream_call(client: OpenAI, client2: OpenAI, upstream_url):
    t = token()
    bg = client.responses.create(model=FAKE, input=f"SLOW {t}", background=True)
    assert bg.status == "queued" and bg.background is True
    # Wait until the upstream is streaming, then cancel on the other replica.
    deadline = time.monotonic() + 20
    while not upstream_streams(upstream_url, t) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert wait_status(client, bg.id, "in_progress").status == "in_progress"
    cancelled_at = time.time()
    r = client2.responses.cancel(bg.id)
    assert r.status == "cancelled"
    deadline = time.monotonic() + 5
    while upstream_streams(upstream_url, t)[0]["ended"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    (stream,) = upstream_streams(upstream_url, t)
    assert stream["how"] == "dropped"
    assert stream["ended"] - cancelled_at < 1.0
    assert client.responses.retrieve(bg.id).status == "cancelled"
    assert client.responses.cancel(bg.id).status == "cancelled"  # idempotent
    # A streaming client of the response sees it end.
    events = list(client.responses.retrieve(bg.id, stream=True))
    assert events[-1].type == "response.cancelled"


def test_cancel_rules(client: OpenAI):
    sync = client.responses.create(model="m", input="sync")
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.cancel(sync.id)
    assert "synchronous" in e.value.message
    bg = client.responses.create(model="m", input="bg", background=True)
    assert wait_status(client, bg.id, "completed").status == "completed"
    with pytest.raises(openai.BadRequestError):
        client.responses.cancel(bg.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_" + "0" * 48)


def test_stream_resume_after_a_dropped_connection(client: OpenAI, client2: OpenAI):
    bg = client.responses.create(model=FAKE, input=f"SLOW {token()}", background=True, stream=True)
    seen = []
    for event in bg:
        seen.append(event)
        if event.type == "response.output_text.delta" and len(seen) > 8:
            break
    bg.close()  # the connection drops mid-stream
    response_id = seen[0].response.id
    last = seen[-1].sequence_number
    rest = list(client2.responses.retrieve(response_id, stream=True, starting_after=last))
    assert rest[0].sequence_number == last + 1
    numbers = [e.sequence_number for e in seen + rest]
    assert numbers == list(range(len(numbers)))
    text = "".join(e.delta for e in seen + rest if e.type == "response.output_text.delta")
    assert rest[-1].type == "response.completed"
    assert text == rest[-1].response.output_text == " ".join(f"w{i}" for i in range(60))
    # A background stream opens as OpenAI's does: created and queued, then in progress.
    opening = [(e.type, e.response.status) for e in seen[:3]]
    assert opening == [
        ("response.created", "queued"),
        ("response.queued", "queued"),
        ("response.in_progress", "in_progress"),
    ]


def test_background_then_retrieve_on_another_replica(client: OpenAI, client2: OpenAI):
    bg = client.responses.create(model="m", input="long job", background=True)
    assert bg.status == "queued" and bg.output == []
    seen = client2.responses.retrieve(bg.id)  # read-your-writes on the other replica
    assert seen.id == bg.id and seen.status in ("queued", "in_progress", "completed")
    assert wait_status(client2, bg.id, "completed").output_text.startswith("echo: long job")


@pytest.mark.parametrize(
    ("word", "code", "calls"),
    [
        ("FAIL500", "server_error", 3),
        ("RATELIMIT", "rate_limit_exceeded", 3),
        ("BADREQ", "invalid_prompt", 1),
    ],
)
def test_upstream_errors_fail_the_response(client, upstream_url, word, code, calls):
    t = token()
    conv = client.conversations.create()
    r = client.responses.create(model=FAKE, conversation=conv.id, input=f"{word} {t}")
    assert r.status == "failed" and r.output == []
    assert r.error is not None and r.error.code == code and r.error.message
    assert len(upstream_calls(upstream_url, t)) == calls  # bounded retries, not for a 400
    assert client.conversations.items.list(conv.id).data == []  # nothing added
    assert client.responses.retrieve(r.id).status == "failed"


def test_transient_upstream_error_is_retried(client: OpenAI, upstream_url: str):
    t = token()
    r = client.responses.create(model=FAKE, input=f"FAILONCE {t}")
    assert r.status == "completed" and len(upstream_calls(upstream_url, t)) == 2


def test_max_output_tokens_makes_it_incomplete(client: OpenAI):
    r = client.responses.create(model=FAKE, input="LENGTH please", max_output_tokens=16)
    assert r.status == "incomplete"
    assert r.incomplete_details is not None and r.incomplete_details.reason == "max_output_tokens"
    assert r.output[0].status == "incomplete"


def test_unknown_model_in_the_map_fails_clearly():
    # The test map sends every model somewhere; the registry refuses names it cannot route.
    with pytest.raises(ProviderError) as e:
        Registry({"gpt-*": {"base_url": "http://x"}}).route("llama")
    assert e.value.code == "model_not_found"


def test_retrieve_delete_and_input_items(client: OpenAI, client2: OpenAI):
    inputs = [{"role": "user", "content": f"m{i}"} for i in range(5)]
    r = client.responses.create(model="m", input=inputs)
    page = client2.responses.input_items.list(r.id, limit=2)
    assert [i.content[0].text for i in page.data] == ["m4", "m3"] and page.has_more
    rest = client2.responses.input_items.list(r.id, after=page.data[-1].id, order="desc")
    assert [i.content[0].text for i in rest.data] == ["m2", "m1", "m0"] and not rest.has_more
    asc = client2.responses.input_items.list(r.id, order="asc")
    assert [i.content[0].text for i in asc.data] == [f"m{i}" for i in range(5)]
    client.responses.delete(r.id)
    for c in (client, client2):
        with pytest.raises(openai.NotFoundError) as e:
            c.responses.retrieve(r.id)
        assert e.value.body["message"] == f"Response with id '{r.id}' not found."
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(r.id)


def test_store_false_is_not_served(client: OpenAI):
    r = client.responses.create(model="m", input="private", store=False)
    assert r.status == "completed" and r.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="m", input="x", previous_response_id=r.id)


def test_responses_of_one_conversation_run_in_order(client: OpenAI, upstream_url: str):
    t = token()
    conv = client.conversations.create()
    ids = [
        client.responses.create(
            model=FAKE, conversation=conv.id, input=f"q{i} {t}", background=True
        ).id
        for i in range(4)
    ]
    for rid in ids:
        assert wait_status(client, rid, "completed").status == "completed"
    items = client.conversations.items.list(conv.id, order="asc", limit=100).data
    assert [role for role, _ in texts(items)] == ["user", "assistant"] * 4
    assert [text for _, text in texts(items)][0::2] == [f"q{i} {t}" for i in range(4)]
    for i in range(4):  # each call saw every earlier turn, never interleaved
        (call,) = upstream_calls(upstream_url, f"q{i} {t}")
        assert len(call["messages"]) == 2 * i + 1


def test_two_workers_share_the_load(client: OpenAI, http: httpx.Client):
    rids = [
        client.responses.create(model=FAKE, input=f"SLOWSTART {token()}", background=True).id
        for _ in range(6)
    ]
    for rid in rids:
        assert wait_status(client, rid, "completed", timeout=60).status == "completed"
    workers = set()
    for rid in rids:
        events = http.get(f"/v1/conversations/{rid}/events").json()["data"]
        workers |= {e["worker"] for e in events if e["type"] == "ResponseInProgress"}
    assert len(workers) == 2


def test_the_log_records_the_response(client: OpenAI, http: httpx.Client):
    conv = client.conversations.create()
    r = client.responses.create(model="m", conversation=conv.id, input="log me")
    events = http.get(f"/v1/conversations/{conv.id}/events", params={"order": "asc"}).json()
    types = [e["type"] for e in events["data"]]
    assert types == [
        "ConversationCreated",
        "ResponseRequested",
        "ResponseInProgress",
        "ItemAdded",
        "ItemAdded",
        "ResponseCompleted",
    ]
    requested = events["data"][1]
    assert requested["response_id"] == r.id and requested["model"] == "m"
    assert requested["input"][0]["content"][0]["text"] == "log me"
    assert requested["context_seq"] == events["data"][0]["seq"]
    assert {e.get("response_id") for e in events["data"][3:]} == {r.id}


def test_concurrent_sync_responses(client: OpenAI):
    results: list[Any] = []

    def run(i: int) -> None:
        results.append(client.responses.create(model="m", input=f"c{i}"))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(r.output_text for r in results) == sorted(
        f"echo: c{i} (context: 1 messages)" for i in range(8)
    )


@pytest.mark.parametrize("on", ["conversation", "previous_response_id"])
def test_an_output_whose_call_is_not_in_the_context_fails_without_asking_the_upstream(
    client: OpenAI, upstream_url: str, on: str
):
    """The API cannot see the context here (the worker reads it), so it is the worker
    that refuses it, with OpenAI's message, before any upstream call."""
    t = token()
    conv = client.conversations.create(items=[{"role": "user", "content": f"hi {t}"}])
    first = client.responses.create(model=FAKE, input=f"hi {t}")
    where: dict[str, Any] = (
        {"conversation": conv.id} if on == "conversation" else {"previous_response_id": first.id}
    )
    orphan = {"type": "function_call_output", "call_id": f"call_{t}", "output": f"sunny {t}"}
    r = client.responses.create(model=FAKE, input=[orphan], **where)  # type: ignore[list-item]
    assert r.status == "failed" and r.error is not None, r
    assert r.error.code == "invalid_prompt"
    assert r.error.message == f"No tool call found for function call output with call_id call_{t}."
    assert upstream_calls(upstream_url, f"sunny {t}") == []
    if on == "conversation":  # a failed response adds nothing to its conversation
        items = client.conversations.items.list(conv.id, order="asc").data
        assert [i.type for i in items] == ["message"]


def test_an_orphan_output_stored_earlier_does_not_fail_later_turns(client: OpenAI):
    """items.create takes any item; an orphan output stored there is not the next
    request's doing (refusing it would fail every later turn of the conversation)."""
    t = token()
    stray = {"type": "function_call_output", "call_id": f"call_{t}", "output": "x"}
    conv = client.conversations.create(items=[stray])  # type: ignore[list-item]
    r = client.responses.create(model=FAKE, conversation=conv.id, input=f"hi {t}")
    assert r.status == "completed", r.error


def test_an_output_whose_call_is_in_the_conversation_is_taken(client: OpenAI):
    t = token()
    call = {"type": "function_call", "call_id": f"call_{t}", "name": "f", "arguments": "{}"}
    conv = client.conversations.create(items=[{"role": "user", "content": "weather?"}, call])
    output = {"type": "function_call_output", "call_id": f"call_{t}", "output": "sunny"}
    r = client.responses.create(model=FAKE, conversation=conv.id, input=[output])  # type: ignore[list-item]
    assert r.status == "completed", r.error


def test_a_stateless_tool_loop_sends_the_output_objects_back_as_input(client: OpenAI):
    """OpenAI's function-calling guide keeps the state itself: the SDK's output objects
    of the first response go back as input, beside the call's output. Every field they
    carry must be accepted (a field of ours the checks did not know would be a 400)."""
    t = token()
    tools = [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]
    context: list[Any] = [{"role": "user", "content": f"TOOL weather {t}"}]
    first = client.responses.create(model=FAKE, input=context, tools=tools, store=False)  # type: ignore[arg-type]
    (call,) = first.output
    assert call.type == "function_call"
    context += first.output
    context.append({"type": "function_call_output", "call_id": call.call_id, "output": "sunny"})
    second = client.responses.create(model=FAKE, input=context, tools=tools)  # type: ignore[arg-type]
    assert second.status == "completed", second.error
    listed = client.responses.input_items.list(second.id, order="asc").data
    assert [i.type for i in listed] == ["message", "function_call", "function_call_output"]


def test_a_conversation_deleted_while_its_responses_run_stays_deleted(
    client: OpenAI, client2: OpenAI, http: httpx.Client, upstream_url: str
):
    """A response that finishes after its conversation was deleted adds no items to it, and
    one queued behind it fails: nothing brings the conversation back (every read and write
    of it stays a 404), and both responses still end and can be retrieved."""
    t = token()
    conv = client.conversations.create(items=[{"role": "user", "content": "seed"}])
    running = client.responses.create(
        model=FAKE, input=f"SLOW {t}", background=True, conversation=conv.id
    )
    queued = client.responses.create(
        model=FAKE, input="after", background=True, conversation=conv.id
    )
    deadline = time.monotonic() + 20
    while not upstream_streams(upstream_url, t) and time.monotonic() < deadline:
        time.sleep(0.05)
    client2.conversations.delete(conv.id)
    assert wait_status(client, running.id, "completed").status == "completed"
    failed = wait_status(client, queued.id, "failed")
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.code == "conversation_deleted"
    for c in (client, client2):
        with pytest.raises(openai.NotFoundError):
            c.conversations.retrieve(conv.id)
        with pytest.raises(openai.NotFoundError):
            c.conversations.items.list(conv.id)
        with pytest.raises(openai.NotFoundError):
            c.conversations.items.create(conv.id, items=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.NotFoundError):
            c.responses.create(model=FAKE, input="again", conversation=conv.id)
    assert client.responses.retrieve(running.id).output_text.startswith("w0 w1")
    events = http.get(f"/v1/conversations/{conv.id}/events", params={"order": "asc"}).json()
    types = [e["type"] for e in events["data"]]
    after = types[types.index("ConversationDeleted") + 1 :]
    assert "ItemAdded" not in after
    assert {"ResponseCompleted", "ResponseFailed"} <= set(after)


def test_a_response_id_is_no_conversation_id(client: OpenAI, http: httpx.Client):
    """A response without a conversation is a thread of its own: a conversation route given
    its id answers the 404 of an unknown conversation and writes nothing (QA finding: items
    were added to it, a metadata update wrote though it answered 404, and the response could
    no longer be read)."""
    r = client.responses.create(model="m", input="alone")
    before = http.get(f"/v1/conversations/{r.id}/events").json()["data"]
    missing = {
        "error": {
            "message": f"Conversation with id '{r.id}' not found.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    item = {"role": "user", "content": "injected"}
    for method, path, body in [
        ("GET", f"/v1/conversations/{r.id}", None),
        ("POST", f"/v1/conversations/{r.id}", {"metadata": {"x": "y"}}),
        ("DELETE", f"/v1/conversations/{r.id}", None),
        ("GET", f"/v1/conversations/{r.id}/items", None),
        ("POST", f"/v1/conversations/{r.id}/items", {"items": [item]}),
        ("POST", "/v1/responses", {"model": "m", "input": "x", "conversation": r.id}),
    ]:
        got = http.request(method, path, json=body)
        assert (got.status_code, got.json()) == (404, missing), (method, path)
    assert http.get(f"/v1/conversations/{r.id}/events").json()["data"] == before
    assert client.responses.retrieve(r.id).output_text == r.output_text
