"""Unit tests of `events.items.normalize_item`: validation and normalisation of one item."""

import re
from typing import Any

import pytest

from events.ids import ITEM_ID_PREFIXES
from events.items import MAX_TEXT_CHARS, OTHER_TYPES, ItemError, normalize_item

NOW = 1_700_000_000
CONV_HEX = "ab" * 24
THREAD = f"conv_{CONV_HEX}"
# Built once: 10 MiB + 1 characters.
TOO_LONG = "x" * (MAX_TEXT_CHARS + 1)


def norm(raw: Any, param: str = "items[0]") -> dict[str, Any]:
    return normalize_item(raw, param, NOW, THREAD)


def rejected(raw: Any, param: str = "items[0]") -> ItemError:
    with pytest.raises(ItemError) as exc:
        norm(raw, param)
    assert isinstance(exc.value.message, str) and exc.value.message
    return exc.value


def assert_id(item: dict[str, Any], prefix: str) -> None:
    assert re.fullmatch(rf"{prefix}_c{CONV_HEX}[0-9a-f]{{16}}", item["id"]), item["id"]


# --- messages: string content ---


@pytest.mark.parametrize("role", ["user", "system", "developer"])
def test_string_content_becomes_input_text(role: str) -> None:
    item = norm({"type": "message", "role": role, "content": "hello"})
    assert_id(item, "msg")
    assert item == {
        "id": item["id"],
        "type": "message",
        "status": "completed",
        "role": role,
        "content": [{"type": "input_text", "text": "hello"}],
        "created_at": NOW,
    }


def test_assistant_string_content_becomes_output_text_with_annotations() -> None:
    item = norm({"type": "message", "role": "assistant", "content": "hi there"})
    assert item["content"] == [{"type": "output_text", "text": "hi there", "annotations": []}]
    assert item["role"] == "assistant"
    assert item["status"] == "completed"


# --- messages: chat-style parts ---


@pytest.mark.parametrize("role", ["user", "system", "developer"])
def test_chat_text_part_becomes_input_text(role: str) -> None:
    item = norm({"role": role, "content": [{"type": "text", "text": "a"}, "b"]})
    assert item["content"] == [
        {"type": "input_text", "text": "a"},
        {"type": "input_text", "text": "b"},
    ]


def test_chat_text_part_in_assistant_becomes_output_text() -> None:
    item = norm({"role": "assistant", "content": [{"type": "text", "text": "a"}]})
    assert item["content"] == [{"type": "output_text", "text": "a", "annotations": []}]


def test_output_text_keeps_annotations_and_logprobs() -> None:
    annotation = {"type": "url_citation", "url": "https://x", "start_index": 0, "end_index": 1}
    item = norm(
        {
            "role": "assistant",
            "content": [
                {"type": "output_text", "text": "a", "annotations": [annotation], "logprobs": []}
            ],
        }
    )
    assert item["content"] == [
        {"type": "output_text", "text": "a", "annotations": [annotation], "logprobs": []}
    ]


def test_image_url_part_becomes_input_image_with_auto_detail() -> None:
    url = "https://example.com/cat.png"
    item = norm({"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]})
    assert item["content"] == [
        {"type": "input_image", "image_url": url, "file_id": None, "detail": "auto"}
    ]


def test_image_url_part_keeps_given_detail() -> None:
    item = norm(
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "data:x", "detail": "low"}}],
        }
    )
    assert item["content"][0]["detail"] == "low"
    assert item["content"][0]["image_url"] == "data:x"


def test_image_url_given_as_plain_string() -> None:
    item = norm({"role": "user", "content": [{"type": "image_url", "image_url": "https://i"}]})
    assert item["content"] == [
        {"type": "input_image", "image_url": "https://i", "file_id": None, "detail": "auto"}
    ]


def test_input_image_with_file_id_only() -> None:
    item = norm({"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]})
    assert item["content"] == [
        {"type": "input_image", "image_url": None, "file_id": "file_1", "detail": "auto"}
    ]


def test_input_image_without_source_is_rejected() -> None:
    err = rejected({"role": "user", "content": [{"type": "input_image"}]})
    assert err.param == "items[0].content[0].image_url"
    assert err.code == "missing_required_parameter"


def test_input_image_bad_detail_is_rejected() -> None:
    err = rejected(
        {"role": "user", "content": [{"type": "input_image", "image_url": "u", "detail": "max"}]}
    )
    assert err.param == "items[0].content[0].detail"
    assert err.code == "invalid_value"


def test_input_file_kept() -> None:
    part = {"type": "input_file", "file_id": "file_9", "filename": "a.pdf"}
    item = norm({"role": "user", "content": [part]})
    assert item["content"] == [part]


@pytest.mark.parametrize(
    ("role", "part"),
    [
        ("user", {"type": "input_text", "text": "x"}),
        ("user", {"type": "input_image", "image_url": "https://x/y.png"}),
        ("user", {"type": "input_file", "file_id": "file_9"}),
        ("assistant", {"type": "output_text", "text": "x"}),
        ("assistant", {"type": "refusal", "refusal": "no"}),
        ("user", {"type": "text", "text": "x"}),
        ("user", {"type": "image_url", "image_url": {"url": "https://x/y.png"}}),
    ],
)
def test_an_unknown_field_of_a_content_part_is_refused(role: str, part: dict) -> None:
    """As for an item's own fields (OpenAI's 400): it used to be dropped silently."""
    norm({"role": role, "content": [part]})
    err = rejected({"role": role, "content": [{**part, "extra": 1}]})
    assert (err.param, err.code) == ("items[0].content[0].extra", "unknown_parameter")


def test_every_sdk_field_of_a_content_part_is_known() -> None:
    from openai.types.responses import (
        response_input_file_param,
        response_input_image_param,
        response_input_text_param,
        response_output_refusal_param,
        response_output_text_param,
    )

    from events.items import _PART_FIELDS

    shapes = {
        "input_text": response_input_text_param.ResponseInputTextParam,
        "input_image": response_input_image_param.ResponseInputImageParam,
        "input_file": response_input_file_param.ResponseInputFileParam,
        "output_text": response_output_text_param.ResponseOutputTextParam,
        "refusal": response_output_refusal_param.ResponseOutputRefusalParam,
    }
    for kind, shape in shapes.items():
        assert set(shape.__annotations__) <= _PART_FIELDS[kind], kind


def test_input_file_with_data() -> None:
    part = {"type": "input_file", "file_data": "data:application/pdf;base64,AA==", "filename": "f"}
    item = norm({"role": "user", "content": [part]})
    assert item["content"] == [part]


def test_input_file_without_source_is_rejected() -> None:
    err = rejected({"role": "user", "content": [{"type": "input_file", "filename": "a.pdf"}]})
    assert err.param == "items[0].content[0].file_id"
    assert err.code == "missing_required_parameter"


def test_refusal_in_assistant() -> None:
    item = norm({"role": "assistant", "content": [{"type": "refusal", "refusal": "no"}]})
    assert item["content"] == [{"type": "refusal", "refusal": "no"}]


def test_output_text_in_user_message_is_rejected() -> None:
    err = rejected({"role": "user", "content": [{"type": "output_text", "text": "x"}]})
    assert err.param == "items[0].content[0].type"
    assert err.code == "invalid_value"
    assert "output_text" in err.message


@pytest.mark.parametrize("kind", ["input_text", "input_image", "input_file"])
def test_input_parts_in_assistant_are_rejected(kind: str) -> None:
    err = rejected({"role": "assistant", "content": [{"type": kind, "text": "x"}]})
    assert err.param == "items[0].content[0].type"
    assert err.code == "invalid_value"


def test_refusal_in_user_is_rejected() -> None:
    err = rejected({"role": "user", "content": [{"type": "refusal", "refusal": "x"}]})
    assert err.param == "items[0].content[0].type"


def test_param_uses_the_given_prefix_and_part_index() -> None:
    err = rejected(
        {"role": "user", "content": ["ok", {"type": "output_text", "text": "x"}]}, "items[3]"
    )
    assert err.param == "items[3].content[1].type"


def test_message_without_type_but_with_role_is_accepted() -> None:
    item = norm({"role": "user", "content": "hi"})
    assert item["type"] == "message"
    assert_id(item, "msg")


def test_item_without_type_or_role_is_rejected() -> None:
    err = rejected({"content": "hi"})
    assert err.param == "items[0].type"
    assert err.code == "missing_required_parameter"


@pytest.mark.parametrize("raw", [None, "text", 5, ["a"], True])
def test_non_object_item_is_rejected(raw: Any) -> None:
    err = rejected(raw)
    assert err.param == "items[0]"
    assert err.code == "invalid_type"


@pytest.mark.parametrize("role", ["bot", "", "USER", 3])
def test_bad_role_is_rejected(role: Any) -> None:
    err = rejected({"type": "message", "role": role, "content": "x"})
    assert err.param == "items[0].role"
    assert err.code == "invalid_value"


@pytest.mark.parametrize(
    "item", [{"type": "message", "content": "x"}, {"type": "message", "role": None, "content": "x"}]
)
def test_a_message_without_role_is_missing_it(item: dict) -> None:
    """Not "Invalid value: 'None'" (QA finding)."""
    err = rejected(item)
    assert (err.param, err.code) == ("items[0].role", "missing_required_parameter")
    assert err.message == "Missing required parameter: 'items[0].role'."


def test_a_null_status_is_the_default_and_type_errors_name_json_types() -> None:
    item = norm({"role": "user", "content": "x", "status": None})
    assert item["status"] == "completed"
    assert rejected({"role": "user", "content": "x", "status": ""}).code == "invalid_value"
    err = rejected({"type": "function_call", "call_id": None, "name": "f", "arguments": 1})
    assert err.param == "items[0].call_id" and err.code == "missing_required_parameter"
    err = rejected({"type": "function_call", "call_id": "c", "name": "f", "arguments": 1})
    assert err.message.endswith("expected a string, but got integer instead.")


def test_message_without_content_is_rejected() -> None:
    err = rejected({"role": "user"})
    assert err.param == "items[0].content"
    assert err.code == "missing_required_parameter"


@pytest.mark.parametrize("content", [5, {"type": "text", "text": "x"}, True])
def test_message_content_of_wrong_type_is_rejected(content: Any) -> None:
    err = rejected({"role": "user", "content": content})
    assert err.param == "items[0].content"
    assert err.code == "invalid_type"


@pytest.mark.parametrize("part", [5, None, ["x"]])
def test_content_part_of_wrong_type_is_rejected(part: Any) -> None:
    err = rejected({"role": "user", "content": [part]})
    assert err.param == "items[0].content[0]"
    assert err.code == "invalid_type"


def test_text_part_with_non_string_text_is_rejected() -> None:
    err = rejected({"role": "user", "content": [{"type": "input_text", "text": 1}]})
    assert err.param == "items[0].content[0].text"
    assert err.code == "invalid_type"


def test_message_status_is_kept_or_validated() -> None:
    assert norm({"role": "user", "content": "x", "status": "in_progress"})["status"] == (
        "in_progress"
    )
    err = rejected({"role": "user", "content": "x", "status": "done"})
    assert err.param == "items[0].status"
    assert err.code == "invalid_value"


def test_message_phase_is_kept_or_validated() -> None:
    kept = norm({"role": "assistant", "content": "x", "phase": "final_answer"})
    assert kept["phase"] == "final_answer"
    assert "phase" not in norm({"role": "assistant", "content": "x", "phase": None})
    assert "phase" not in norm({"role": "assistant", "content": "x"})
    err = rejected({"role": "assistant", "content": "x", "phase": "draft"})
    assert (err.param, err.code) == ("items[0].phase", "invalid_value")


# --- text length ---


def test_too_long_string_content_is_rejected() -> None:
    err = rejected({"role": "user", "content": TOO_LONG})
    assert err.param == "items[0].content"
    assert err.code == "string_above_max_length"


def test_too_long_text_part_is_rejected() -> None:
    err = rejected({"role": "user", "content": [{"type": "input_text", "text": TOO_LONG}]})
    assert err.param == "items[0].content[0].text"
    assert err.code == "string_above_max_length"
    assert str(MAX_TEXT_CHARS) in err.message


def test_text_of_exactly_max_length_is_accepted() -> None:
    text = TOO_LONG[:MAX_TEXT_CHARS]
    item = norm({"role": "user", "content": text})
    assert len(item["content"][0]["text"]) == MAX_TEXT_CHARS


# --- function calls ---

CALL = {"type": "function_call", "call_id": "call_1", "name": "get", "arguments": '{"a":1}'}


def test_function_call() -> None:
    item = norm(dict(CALL))
    assert_id(item, "fc")
    assert item == {
        "id": item["id"],
        "type": "function_call",
        "status": "completed",
        "call_id": "call_1",
        "name": "get",
        "arguments": '{"a":1}',
        "created_at": NOW,
    }


@pytest.mark.parametrize("key", ["call_id", "name", "arguments"])
def test_function_call_requires_string_fields(key: str) -> None:
    missing = {k: v for k, v in CALL.items() if k != key}
    err = rejected(missing)
    assert err.param == f"items[0].{key}"
    assert err.code == "missing_required_parameter"

    err = rejected({**CALL, key: {"not": "a string"}})
    assert err.param == f"items[0].{key}"
    assert err.code == "invalid_type"


def test_function_call_output_with_string_output() -> None:
    item = norm({"type": "function_call_output", "call_id": "call_1", "output": "42"})
    assert_id(item, "fco")
    assert item == {
        "id": item["id"],
        "type": "function_call_output",
        "status": "completed",
        "call_id": "call_1",
        "output": "42",
        "created_at": NOW,
    }


def test_function_call_output_with_content_parts() -> None:
    item = norm(
        {"type": "function_call_output", "call_id": "c", "output": [{"type": "text", "text": "t"}]}
    )
    assert item["output"] == [{"type": "input_text", "text": "t"}]


def test_function_call_output_requires_output_and_call_id() -> None:
    err = rejected({"type": "function_call_output", "call_id": "c"})
    assert err.param == "items[0].output"
    assert err.code == "missing_required_parameter"
    err = rejected({"type": "function_call_output", "call_id": "c", "output": 42})
    assert err.param == "items[0].output"
    assert err.code == "invalid_type"
    err = rejected({"type": "function_call_output", "output": "x"})
    assert err.param == "items[0].call_id"
    assert err.code == "missing_required_parameter"


# --- reasoning ---


def test_reasoning_with_summary() -> None:
    item = norm(
        {
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "thought", "extra": 1}],
            "encrypted_content": "opaque",
        }
    )
    assert_id(item, "rs")
    assert item == {
        "id": item["id"],
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": "thought"}],
        "encrypted_content": "opaque",
        "created_at": NOW,
    }


def test_reasoning_with_content() -> None:
    item = norm(
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "r"}]}
    )
    assert item["summary"] == []
    assert item["content"] == [{"type": "reasoning_text", "text": "r"}]


def test_reasoning_requires_summary_list() -> None:
    err = rejected({"type": "reasoning"})
    assert err.param == "items[0].summary"
    assert err.code == "missing_required_parameter"


def test_reasoning_summary_part_type_is_checked() -> None:
    err = rejected({"type": "reasoning", "summary": [{"type": "text", "text": "x"}]})
    assert err.param == "items[0].summary[0].type"
    assert err.code == "invalid_value"


# --- other types, unknown types ---


def test_other_types_are_every_prefixed_type_but_the_strict_ones() -> None:
    assert "web_search_call" in OTHER_TYPES
    assert "mcp_call" in OTHER_TYPES
    assert not OTHER_TYPES & {"message", "function_call", "function_call_output", "reasoning"}


@pytest.mark.parametrize("kind", sorted(OTHER_TYPES))
def test_other_known_types_are_kept_as_sent_with_fresh_id(kind: str) -> None:
    raw = {
        "type": kind,
        "id": "client_supplied",
        "created_at": 1,
        "status": "completed",
        "payload": {"nested": [1, "two", None]},
    }
    item = norm(raw)
    assert_id(item, ITEM_ID_PREFIXES[kind])
    assert item == {
        "id": item["id"],
        "type": kind,
        "status": "completed",
        "payload": {"nested": [1, "two", None]},
        "created_at": NOW,
    }


def test_web_search_call_and_mcp_call_prefixes() -> None:
    assert_id(norm({"type": "web_search_call", "action": {"type": "search"}}), "ws")
    assert_id(norm({"type": "mcp_call", "name": "t", "server_label": "s"}), "mcp")


@pytest.mark.parametrize("kind", ["bogus", "Message", "", "item"])
def test_unknown_type_is_rejected(kind: str) -> None:
    err = rejected({"type": kind, "role": "user", "content": "x"})
    assert err.param == "items[0].type"
    assert err.code == "invalid_value"
    assert f"'{kind}'" in err.message


@pytest.mark.parametrize("kind", [["message"], {"a": 1}, 5, None])
def test_non_string_type_is_an_item_error(kind: Any) -> None:
    """A `type` of any JSON kind is rejected as an ItemError, never a crash."""
    err = rejected({"type": kind, "role": "user", "content": "x"})
    assert err.param == "items[0].type"


# --- ids ---


@pytest.mark.parametrize(
    ("raw", "prefix"),
    [
        ({"role": "user", "content": "x"}, "msg"),
        (CALL, "fc"),
        ({"type": "function_call_output", "call_id": "c", "output": "o"}, "fco"),
        ({"type": "reasoning", "summary": []}, "rs"),
    ],
)
def test_ids_are_fresh_and_prefixed(raw: dict[str, Any], prefix: str) -> None:
    supplied = f"{prefix}_mine"
    first = norm({**raw, "id": supplied})
    second = norm({**raw, "id": supplied})
    assert_id(first, prefix)
    assert_id(second, prefix)
    assert first["id"] != supplied
    assert first["id"] != second["id"]


def test_created_at_comes_from_the_caller_not_the_client() -> None:
    item = normalize_item(
        {"role": "user", "content": "x", "created_at": 5}, "items[0]", 1234, THREAD
    )
    assert item["created_at"] == 1234


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"role": "user", "content": "x", "colour": "red"}, "colour"),
        ({"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "x": 1}, "x"),
        ({"type": "function_call_output", "call_id": "c", "output": "ok", "result": 1}, "result"),
        ({"type": "reasoning", "summary": [], "thoughts": "x"}, "thoughts"),
    ],
)
def test_a_field_openai_does_not_know_is_refused(raw: dict[str, Any], field: str) -> None:
    """Dropped silently, it would lose what the client meant to store; OpenAI refuses it."""
    error = rejected(raw, "input[3]")
    assert (error.param, error.code) == (f"input[3].{field}", "unknown_parameter")
    assert error.message == f"Unknown parameter: 'input[3].{field}'."


def test_every_sdk_field_of_a_strict_item_is_known() -> None:
    """The SDK's input shapes of each strictly checked type are accepted: a field OpenAI adds
    (seen here when the SDK gains it) must be added to `events.items._FIELDS`."""
    from openai.types.responses import (
        easy_input_message_param,
        response_function_tool_call_param,
        response_input_item_param,
        response_output_message_param,
        response_reasoning_item_param,
    )

    from events.items import _FIELDS

    shapes = {
        "message": (
            easy_input_message_param.EasyInputMessageParam,
            response_input_item_param.Message,
            response_output_message_param.ResponseOutputMessageParam,
        ),
        "function_call": (response_function_tool_call_param.ResponseFunctionToolCallParam,),
        "function_call_output": (response_input_item_param.FunctionCallOutput,),
        "reasoning": (response_reasoning_item_param.ResponseReasoningItemParam,),
    }
    for kind, types in shapes.items():
        for shape in types:
            assert set(shape.__annotations__) <= _FIELDS[kind], (kind, shape.__name__)


def test_a_stored_item_sent_back_is_accepted() -> None:
    """Our items carry `id` and `created_at`; a client may list them and send them again."""
    stored = norm({"role": "assistant", "content": "hi", "phase": "final_answer"})
    again = norm(stored)
    assert again["id"] != stored["id"] and again["content"] == stored["content"]


def test_an_item_id_names_its_thread() -> None:
    """A reference finds its item from the id alone: a conversation's or a stateless
    response's items carry that thread; ids made before, or not ours, name none."""
    from events.ids import item_thread, new_id, new_item_id

    conv, resp = new_id("conv"), new_id("resp")
    for thread in (conv, resp):
        item_id = new_item_id("function_call", thread)
        assert item_id.startswith("fc_") and item_thread(item_id) == thread
    assert new_item_id("message", conv) != new_item_id("message", conv)
    for other in (new_id("msg"), "msg_c" + "g" * 64, "msg_x" + "a" * 64, "msg", "", "rs_c"):
        assert item_thread(other) is None, other


def test_an_item_reference_is_kept_for_the_api_to_resolve() -> None:
    from events.items import copy_item, is_reference

    ref = norm({"type": "item_reference", "id": "msg_1"})
    assert ref == {"type": "item_reference", "id": "msg_1"} and is_reference(ref)
    assert (
        rejected({"type": "item_reference"}).param,
        rejected({"type": "item_reference"}).code,
    ) == (
        "items[0].id",
        "missing_required_parameter",
    )
    assert rejected({"type": "item_reference", "id": 5}).code == "invalid_type"
    extra = rejected({"type": "item_reference", "id": "msg_1", "role": "user"})
    assert (extra.param, extra.code) == ("items[0].role", "unknown_parameter")
    stored = norm({"role": "user", "content": "hi"})
    copy = copy_item(stored, NOW + 5, f"resp_{'cd' * 24}")
    assert copy["id"].startswith(f"msg_r{'cd' * 24}") and copy["created_at"] == NOW + 5
    assert {k: v for k, v in copy.items() if k not in ("id", "created_at")} == {
        k: v for k, v in stored.items() if k not in ("id", "created_at")
    }


def test_an_item_reference_may_leave_out_its_type() -> None:
    """The SDK's ItemReference has an optional `type`: an `id` alone is a reference."""
    from openai.types.responses.response_input_item_param import ItemReference

    assert set(ItemReference.__annotations__) == {"id", "type"}
    for raw in ({"id": "msg_1"}, {"id": "msg_1", "type": None}):
        assert norm(raw) == {"type": "item_reference", "id": "msg_1"}
    assert rejected({"status": "completed"}).param == "items[0].type"
