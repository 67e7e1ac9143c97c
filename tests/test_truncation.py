"""`truncation: "auto"`: when the upstream says the context does not fit, the worker drops
the oldest items (whole turns) and calls again; without it the response fails with
`context_length_exceeded`. Against the fake upstream, whose `fake-ctx<N>` models hold N
messages; and the pieces on their own (how an upstream's refusal is recognised, where the
cut goes)."""

import json
from typing import Any

import pytest
from openai import OpenAI

from tests.test_responses import token, upstream_calls
from workers.context import drop_oldest
from workers.providers.base import CONTEXT_EXCEEDED
from workers.providers.openai_chat import _error


def _message(role: str, text: str) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": text}


def _conversation(client: OpenAI, turns: int, t: str) -> str:
    items: list[Any] = []
    for i in range(turns):
        items += [_message("user", f"q{i} {t}"), _message("assistant", f"a{i} {t}")]
    return client.conversations.create(items=items).id


@pytest.mark.parametrize("model", ["fake-ctx5", "fake-ctx5-vllm"])
def test_auto_drops_the_oldest_turns_until_it_fits(client: OpenAI, upstream_url: str, model: str):
    t = token()
    conv = _conversation(client, 6, t)
    r = client.responses.create(
        model=model, conversation=conv, input=f"final {t}", truncation="auto"
    )
    assert r.status == "completed" and r.truncation == "auto"
    calls = upstream_calls(upstream_url, f"final {t}")
    # 12 earlier items + the input; then the newer half (from a user message); then again.
    assert [len(c["messages"]) for c in calls] == [13, 7, 3]
    assert [m["content"] for m in calls[-1]["messages"]] == [f"q5 {t}", f"a5 {t}", f"final {t}"]
    # The model saw less; the conversation keeps everything.
    items = client.conversations.items.list(conv, limit=100).data
    assert len(items) == 14


@pytest.mark.parametrize("model", ["fake-ctx5", "fake-ctx5-vllm"])
def test_disabled_fails_with_context_length_exceeded(client: OpenAI, upstream_url: str, model: str):
    t = token()
    conv = _conversation(client, 6, t)
    r = client.responses.create(model=model, conversation=conv, input=f"final {t}")
    assert r.status == "failed" and r.truncation == "disabled"
    assert r.error is not None and r.error.code == CONTEXT_EXCEEDED
    assert "maximum context length" in r.error.message
    assert len(upstream_calls(upstream_url, f"final {t}")) == 1


def test_the_input_itself_too_long_fails_after_dropping_everything_else(
    client: OpenAI, upstream_url: str
):
    t = token()
    first = client.responses.create(model="fake-ctx9", input=f"first {t}")
    r = client.responses.create(
        model="fake-ctx1",
        previous_response_id=first.id,
        input=[_message("user", f"one {t}"), _message("user", f"two {t}")],
        truncation="auto",
    )
    assert r.status == "failed"
    assert r.error is not None and r.error.code == CONTEXT_EXCEEDED
    # The previous turn (2 items) went; the input (2) alone still did not fit.
    assert [len(c["messages"]) for c in upstream_calls(upstream_url, f"two {t}")] == [4, 2]


def _call(call_id: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "f", "arguments": "{}"}


def _output(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": "x"}


def test_drop_oldest_cuts_at_a_user_message_and_keeps_the_input():
    u = [_message("user", f"u{i}") for i in range(4)]
    a = [_message("assistant", f"a{i}") for i in range(4)]
    new = [_message("user", "new")]
    # The half point falls on a tool call's output: the cut moves on to the next question.
    context = [u[0], _call("c1"), _output("c1"), a[0], u[1], a[1], *new]
    assert drop_oldest(context, 1) == [u[1], a[1], *new]
    # No user message after the half point: everything earlier goes.
    assert drop_oldest([u[0], a[0], _call("c"), _output("c"), *new], 1) == new
    assert drop_oldest([u[0], *new], 1) == new
    # Nothing earlier: nothing to drop (the request's input is never cut).
    assert drop_oldest(new, 1) is None
    assert drop_oldest([u[0], *new], 2) is None
    # Each step drops at least half of what is earlier.
    long = [m for i in range(3) for m in (u[i], a[i])] + new
    assert drop_oldest(long, 1) == [u[2], a[2], *new]  # the half point a1 -> u2


def _openai(message: str, code: Any) -> str:
    return json.dumps({"error": {"message": message, "code": code}})


def _vllm(message: str) -> str:
    return json.dumps({"object": "error", "message": message, "code": 400})


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (400, _openai("too big", CONTEXT_EXCEEDED), CONTEXT_EXCEEDED),
        (400, _vllm("This model's maximum context length is 4096 tokens"), CONTEXT_EXCEEDED),
        (400, _openai("the request exceeds the available context size", 400), CONTEXT_EXCEEDED),
        (413, "Prompt is too long", CONTEXT_EXCEEDED),
        (400, _openai("bad prompt", "invalid_prompt"), "invalid_prompt"),
        (400, _vllm("unknown field"), "invalid_prompt"),
        (404, _openai("no such model", "model_not_found"), "model_not_found"),
    ],
)
def test_how_an_upstream_refusal_is_read(status: int, body: str, code: str):
    error = _error(status, body, None)
    assert error.code == code and not error.retryable


def test_drop_oldest_keeps_the_call_of_an_output_in_the_input():
    """The input answers a call made earlier: cutting that call off would leave the
    upstream a tool message without its call."""
    u = [_message("user", f"u{i}") for i in range(3)]
    a = [_message("assistant", f"a{i}") for i in range(3)]
    answer = [_output("c")]
    context = [u[0], a[0], u[1], _call("c"), a[1], u[2], a[2], *answer]
    assert drop_oldest(context, 1) == [u[1], _call("c"), a[1], u[2], a[2], *answer]
    # Its turn is the first: nothing can go.
    assert drop_oldest([u[0], _call("c"), a[0], u[1], a[1], *answer], 1) is None
    # After the cut anyway: the usual half.
    assert drop_oldest([u[0], a[0], u[1], _call("c"), *answer], 1) == [u[1], _call("c"), *answer]
