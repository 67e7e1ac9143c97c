"""Bad input to /v1/responses gets OpenAI's 4xx body naming the parameter, and writes nothing."""

from typing import Any

import httpx
import pytest
from openai import OpenAI


def error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error"
    return body  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": "hi"}, "model", "missing_required_parameter"),
        ({"model": 3, "input": "hi"}, "model", "invalid_type"),
        ({"model": "m"}, "input", "missing_required_parameter"),
        ({"model": "m", "input": 5}, "input", "invalid_type"),
        (
            {"model": "m", "input": [{"role": "wizard", "content": "x"}]},
            "input[0].role",
            "invalid_value",
        ),
        ({"model": "m", "input": [{"foo": 1}]}, "input[0].type", "missing_required_parameter"),
        ({"model": "m", "input": "x", "temperature": 3}, "temperature", "decimal_above_max_value"),
        ({"model": "m", "input": "x", "temperature": "hot"}, "temperature", "invalid_type"),
        ({"model": "m", "input": "x", "top_p": -1}, "top_p", "decimal_below_min_value"),
        (
            {"model": "m", "input": "x", "max_output_tokens": 5},
            "max_output_tokens",
            "integer_below_min_value",
        ),
        (
            {"model": "m", "input": "x", "top_logprobs": 21},
            "top_logprobs",
            "integer_above_max_value",
        ),
        ({"model": "m", "input": "x", "stream": "yes"}, "stream", "invalid_type"),
        ({"model": "m", "input": "x", "tools": {}}, "tools", "invalid_type"),
        (
            {"model": "m", "input": "x", "tools": [{"type": "function"}]},
            "tools[0].name",
            "missing_required_parameter",
        ),
        (  # a built-in tool the Chat Completions upstreams cannot run: not silently dropped
            {"model": "m", "input": "x", "tools": [{"type": "web_search"}]},
            "tools[0].type",
            "invalid_value",
        ),
        ({"model": "m", "input": "x", "tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
        (
            {"model": "m", "input": "x", "tool_choice": {"type": "web_search_preview"}},
            "tool_choice.type",
            "invalid_value",
        ),
        (
            {"model": "m", "input": "x", "tool_choice": {"type": "function"}},
            "tool_choice.name",
            "missing_required_parameter",
        ),
        ({"model": "m", "input": "x", "truncation": "middle"}, "truncation", "invalid_value"),
        ({"model": "", "input": "x"}, "model", "empty_string"),
        ({"model": "m", "input": "x", "max_tokens": 50}, "max_tokens", "unknown_parameter"),
        ({"model": "m", "input": "x", "reasoning": "high"}, "reasoning", "invalid_type"),
        (
            {"model": "m", "input": "x", "reasoning": {"effort": 3}},
            "reasoning.effort",
            "invalid_type",
        ),
        (
            {"model": "m", "input": "x", "reasoning": {"summary": "long"}},
            "reasoning.summary",
            "invalid_value",
        ),
        (
            {"model": "m", "input": "x", "reasoning": {"context": "every_turn"}},
            "reasoning.context",
            "invalid_value",
        ),
        (
            {"model": "m", "input": "x", "reasoning": {"efort": "high"}},
            "reasoning.efort",
            "unknown_parameter",
        ),
        (
            {"model": "m", "input": [{"role": "user", "content": "x", "name": "n"}]},
            "input[0].name",
            "unknown_parameter",
        ),
        (  # with no conversation or previous response, the call must be in the input
            {
                "model": "m",
                "input": [{"type": "function_call_output", "call_id": "call_9", "output": "ok"}],
            },
            "input",
            None,
        ),
        ({"model": "m", "input": "x", "include": ["bogus"]}, "include", "invalid_value"),
        ({"model": "m", "input": "x", "include": "bogus"}, "include", "invalid_type"),
        ({"model": "m", "input": "x", "include": [3]}, "include[0]", "invalid_type"),
        ({"model": "m", "input": "x", "text": "plain"}, "text", "invalid_type"),
        (
            {"model": "m", "input": "x", "text": {"format": {"type": "bogus"}}},
            "text.format.type",
            "invalid_value",
        ),
        ({"model": "m", "input": "x", "tool_choice": "required"}, "tool_choice", "invalid_value"),
        (  # a forced function that the request does not offer
            {
                "model": "m",
                "input": "x",
                "tools": [{"type": "function", "name": "f"}],
                "tool_choice": {"type": "function", "name": "g"},
            },
            "tool_choice",
            "invalid_value",
        ),
        ({"model": "m", "input": "x", "metadata": {"k": 1}}, "metadata.k", "invalid_type"),
        (
            {"model": "m", "input": "x", "background": True, "store": False},
            "background",
            "invalid_value",
        ),
        (
            {"model": "m", "input": "x", "conversation": {"name": "c"}},
            "conversation.id",
            "missing_required_parameter",
        ),
        (
            {"model": "m", "input": "x", "previous_response_id": "resp_nope"},
            "previous_response_id",
            "invalid_value",
        ),
    ],
)
def test_bad_create_bodies(http: httpx.Client, body: dict[str, Any], param: str, code: str):
    before = http.get("/v1/events", params={"order": "desc", "limit": 1}).json()["last_id"]
    body = error(http.post("/v1/responses", json=body), 400)
    assert (body["param"], body["code"]) == (param, code)
    assert http.get("/v1/events", params={"order": "desc", "limit": 1}).json()["last_id"] == before


def test_valid_formats_includes_and_forced_tools_are_taken(client: OpenAI):
    """The checks above refuse only what OpenAI refuses."""
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    for extra in (
        {"text": {"format": {"type": "json_schema", "name": "s", "schema": schema}}},
        {"text": {"format": {"type": "json_object"}, "verbosity": "low"}},
        {"include": ["message.output_text.logprobs"]},
        # effort is passed on as sent: a value newer than this server's SDK is not refused
        {"reasoning": {"effort": "max", "summary": "auto", "generate_summary": None}},
        {"reasoning": {"context": "all_turns", "mode": "pro"}},
        {"tools": tools, "tool_choice": {"type": "function", "name": "f"}},
        {"tools": tools, "tool_choice": "required"},
        {  # a stateless tool loop: the call and its output both in the input
            "input": [
                {"role": "user", "content": "weather?"},
                {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            ],
            "tools": tools,
        },
    ):
        r = client.responses.create(**{"model": "m", "input": "x", **extra})  # type: ignore[call-overload]
        assert r.status in ("completed", "incomplete"), (extra, r.status)


def test_conversation_and_previous_are_exclusive(client: OpenAI, http: httpx.Client):
    conv = client.conversations.create()
    prev = client.responses.create(model="m", input="x")
    body = error(
        http.post(
            "/v1/responses",
            json={
                "model": "m",
                "input": "x",
                "conversation": conv.id,
                "previous_response_id": prev.id,
            },
        ),
        400,
    )
    assert "previous_response_id" in body["message"] and "conversation" in body["message"]


def test_unknown_conversation_is_404(http: httpx.Client):
    body = error(
        http.post("/v1/responses", json={"model": "m", "input": "x", "conversation": "conv_nope"}),
        404,
    )
    assert body["message"] == "Conversation with id 'conv_nope' not found."


def test_deleted_conversation_takes_no_responses(client: OpenAI, http: httpx.Client):
    conv = client.conversations.create()
    client.conversations.delete(conv.id)
    error(
        http.post("/v1/responses", json={"model": "m", "input": "x", "conversation": conv.id}), 404
    )


def test_openai_parameters_not_acted_on_are_accepted(http: httpx.Client):
    r = http.post(
        "/v1/responses",
        json={
            "model": "m",
            "input": "x",
            "prompt_cache_retention": "24h",
            "service_tier": "flex",
            "stream_options": {"include_obfuscation": False},
        },
    )
    assert r.status_code == 200 and r.json()["status"] == "completed"


def test_a_parameter_openai_does_not_know_is_refused(http: httpx.Client):
    body = error(http.post("/v1/responses", json={"model": "m", "input": "x", "zzz": 1}), 400)
    assert body == {
        "message": "Unknown parameter: 'zzz'.",
        "type": "invalid_request_error",
        "param": "zzz",
        "code": "unknown_parameter",
    }


def test_every_sdk_field_of_reasoning_is_known():
    from openai.types.shared_params import reasoning

    from api.response_params import REASONING_FIELDS

    assert set(reasoning.Reasoning.__annotations__) <= REASONING_FIELDS


def test_every_sdk_parameter_is_known():
    """A parameter the SDK gains (i.e. OpenAI added it) must be added to
    `api.response_params.KNOWN`, accepted or implemented, not refused."""
    import inspect

    from openai.resources.responses.responses import Responses
    from openai.types.responses import response_create_params

    from api.response_params import KNOWN

    sdk = set(response_create_params.ResponseCreateParamsStreaming.__annotations__)
    assert sdk <= KNOWN
    # What the helpers send too (responses.parse sends `verbosity` at the top level).
    client_side = {"self", "text_format", "parse_as", "event_handler", "response_id"}
    client_side |= {"starting_after", "extra_headers", "extra_query", "extra_body", "timeout"}
    for helper in (Responses.create, Responses.parse, Responses.stream):
        assert set(inspect.signature(helper).parameters) - client_side <= KNOWN, helper


def test_a_top_level_verbosity_is_taken_as_the_texts(client: OpenAI, http: httpx.Client):
    r = client.responses.parse(model="m", input="x", verbosity="low")
    assert r.status == "completed" and r.text is not None and r.text.verbosity == "low"
    body = error(http.post("/v1/responses", json={"model": "m", "input": "x", "verbosity": 3}), 400)
    assert body["param"] == "verbosity"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/responses/resp_unknown",
        "/v1/responses/not-a-response",
        "/v1/responses/resp_" + "0" * 64,
        "/v1/responses/resp_" + "0" * 48 + "/input_items",
    ],
)
def test_unknown_response_is_404(http: httpx.Client, path: str):
    body = error(http.get(path), 404)
    assert body["message"].startswith("Response with id '")


def test_input_items_paging_errors(client: OpenAI, http: httpx.Client):
    r = client.responses.create(model="m", input="x")
    assert (
        error(http.get(f"/v1/responses/{r.id}/input_items", params={"limit": 101}), 400)["param"]
        == "limit"
    )
    assert (
        error(http.get(f"/v1/responses/{r.id}/input_items", params={"after": "msg_x"}), 400)[
            "param"
        ]
        == "after"
    )
    assert (
        error(http.get(f"/v1/responses/{r.id}/input_items", params={"order": "up"}), 400)["param"]
        == "order"
    )


def test_malformed_json_is_400(http: httpx.Client):
    r = http.post("/v1/responses", content=b"{nope", headers={"Content-Type": "application/json"})
    assert error(r, 400)["param"] is None
