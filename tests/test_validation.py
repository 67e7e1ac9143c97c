"""Request validation and errors through real HTTP: OpenAI's limits, status codes and bodies.

Every failure must come back as `{"error": {"message", "type", "param", "code"}}` with a
4xx status; nothing a client sends may produce a 5xx.
"""

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import openai
import pytest
from openai import OpenAI

JSON = {"content-type": "application/json"}
NOT_FOUND_ROUTE = "Invalid URL or method."


# --- helpers ---


def send(http: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on a connection of its own, so a crashing request cannot break the next."""
    headers = {"connection": "close", **kwargs.pop("headers", {})}
    return http.request(method, path, headers=headers, **kwargs)


def assert_error(
    resp: Any,
    status: int,
    *,
    param: str | None = None,
    code: str | None = None,
    message: str | None = None,
) -> dict[str, Any]:
    """`resp` (httpx or the SDK's response) is an OpenAI-shaped error with these fields."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert isinstance(body, dict) and list(body) == ["error"], body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert err["type"] == "invalid_request_error", err
    assert err["param"] == param, err
    assert err["code"] == code, err
    if message is not None:
        assert err["message"] == message, err
    return err


def assert_sdk_error(
    exc: pytest.ExceptionInfo[openai.APIStatusError],
    status: int,
    *,
    param: str | None = None,
    code: str | None = None,
    message: str | None = None,
) -> None:
    assert exc.value.status_code == status
    err = assert_error(exc.value.response, status, param=param, code=code, message=message)
    assert exc.value.body == err
    assert exc.value.param == param
    assert exc.value.code == code


def msgs(n: int, prefix: str = "m") -> list[dict[str, Any]]:
    return [{"type": "message", "role": "user", "content": f"{prefix}{i}"} for i in range(n)]


def texts(client: OpenAI, conv_id: str) -> list[str]:
    page = client.conversations.items.list(conv_id, limit=100, order="asc")
    return [item.content[0].text for item in page.data]  # type: ignore[union-attr]


def item_ids(http: httpx.Client, conv_id: str) -> list[str]:
    resp = send(http, "GET", f"/v1/conversations/{conv_id}/items?limit=100&order=asc")
    assert resp.status_code == 200, resp.text
    return [item["id"] for item in resp.json()["data"]]


def newest_conversation(http: httpx.Client) -> str | None:
    resp = send(http, "GET", "/v1/conversations?limit=1")
    assert resp.status_code == 200, resp.text
    return resp.json()["first_id"]  # type: ignore[no-any-return]


def conv_not_found(conv_id: str) -> str:
    return f"Conversation with id '{conv_id}' not found."


def item_not_found(item_id: str) -> str:
    return f"Item with id '{item_id}' not found."


@pytest.fixture
def conv(client: OpenAI) -> str:
    return client.conversations.create().id


@pytest.fixture
def conv2(client: OpenAI) -> tuple[str, list[str]]:
    """A conversation with two items, and their ids in order."""
    conv_id = client.conversations.create(items=msgs(2)).id  # type: ignore[arg-type]
    page = client.conversations.items.list(conv_id, order="asc")
    return conv_id, [item.id for item in page.data]  # type: ignore[union-attr]


# --- metadata ---


@pytest.fixture(params=["create", "update"])
def write_metadata(
    request: pytest.FixtureRequest, http: httpx.Client
) -> Callable[[Any], httpx.Response]:
    """Send `metadata` on conversation create, or on update of an existing conversation.

    A refused update must leave the conversation's metadata as it was.
    """

    def write(metadata: Any) -> httpx.Response:
        if request.param == "create":
            resp = send(http, "POST", "/v1/conversations", json={"metadata": metadata})
            conv_id = resp.json().get("id") if resp.status_code == 200 else None
        else:
            created = send(http, "POST", "/v1/conversations", json={"metadata": {"orig": "1"}})
            conv_id = created.json()["id"]
            resp = send(http, "POST", f"/v1/conversations/{conv_id}", json={"metadata": metadata})
        if conv_id is not None:
            stored = send(http, "GET", f"/v1/conversations/{conv_id}").json()["metadata"]
            assert stored == (metadata if resp.status_code == 200 else {"orig": "1"})
        return resp

    return write


def test_metadata_17_pairs_rejected(write_metadata: Callable[[Any], httpx.Response]) -> None:
    resp = write_metadata({f"k{i}": "v" for i in range(17)})
    err = assert_error(resp, 400, param="metadata", code="object_above_max_properties")
    assert "16" in err["message"] and "17" in err["message"]


def test_metadata_16_pairs_accepted(write_metadata: Callable[[Any], httpx.Response]) -> None:
    metadata = {f"k{i}": f"v{i}" for i in range(16)}
    resp = write_metadata(metadata)
    assert resp.status_code == 200, resp.text
    assert resp.json()["metadata"] == metadata


def test_metadata_key_of_65_chars_rejected(write_metadata: Callable[[Any], httpx.Response]) -> None:
    resp = write_metadata({"k" * 65: "v"})
    err = assert_error(resp, 400, param="metadata", code="string_above_max_length")
    assert "64" in err["message"] and "65" in err["message"]


def test_metadata_key_of_64_chars_accepted(write_metadata: Callable[[Any], httpx.Response]) -> None:
    resp = write_metadata({"k" * 64: "v"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["metadata"] == {"k" * 64: "v"}


def test_metadata_value_of_513_chars_rejected(
    write_metadata: Callable[[Any], httpx.Response],
) -> None:
    resp = write_metadata({"k": "v" * 513})
    err = assert_error(resp, 400, param="metadata.k", code="string_above_max_length")
    assert "512" in err["message"] and "513" in err["message"]


def test_metadata_value_of_512_chars_accepted(
    write_metadata: Callable[[Any], httpx.Response],
) -> None:
    resp = write_metadata({"k": "v" * 512})
    assert resp.status_code == 200, resp.text
    assert resp.json()["metadata"] == {"k": "v" * 512}


@pytest.mark.parametrize(
    ("value", "named"),
    [
        (1, "integer"),
        (1.5, "number"),
        (True, "boolean"),
        (None, "null"),
        (["a"], "array"),
        ({"a": "b"}, "object"),
    ],
)
def test_metadata_non_string_value_rejected(
    write_metadata: Callable[[Any], httpx.Response], value: Any, named: str
) -> None:
    resp = write_metadata({"ok": "fine", "k": value})
    assert_error(resp, 400, param="metadata.k", code="invalid_type")
    # JSON's type names, not Python's (NoneType, int: a QA finding)
    assert resp.json()["error"]["message"].endswith(f"but got {named} instead.")


@pytest.mark.parametrize("metadata", [["a", "b"], "k=v", 5, True, [{"k": "v"}]])
def test_metadata_not_an_object_rejected(
    write_metadata: Callable[[Any], httpx.Response], metadata: Any
) -> None:
    resp = write_metadata(metadata)
    assert_error(resp, 400, param="metadata", code="invalid_type")


def test_metadata_limits_through_the_sdk(client: OpenAI, conv: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.conversations.create(metadata={f"k{i}": "v" for i in range(17)})
    assert_sdk_error(exc, 400, param="metadata", code="object_above_max_properties")

    with pytest.raises(openai.BadRequestError) as exc:
        client.conversations.update(conv, metadata={"k": "v" * 513})
    assert_sdk_error(exc, 400, param="metadata.k", code="string_above_max_length")

    updated = client.conversations.update(conv, metadata={"k" * 64: "v" * 512})
    assert updated.metadata == {"k" * 64: "v" * 512}


@pytest.mark.parametrize("body", [{}, None])
def test_update_without_metadata_rejected(
    http: httpx.Client, client: OpenAI, body: Any, conv: str
) -> None:
    client.conversations.update(conv, metadata={"keep": "me"})
    kwargs: dict[str, Any] = {} if body is None else {"json": body}
    resp = send(http, "POST", f"/v1/conversations/{conv}", **kwargs)
    assert_error(
        resp,
        400,
        param="metadata",
        code="missing_required_parameter",
        message="Missing required parameter: 'metadata'.",
    )
    assert client.conversations.retrieve(conv).metadata == {"keep": "me"}


@pytest.mark.parametrize(
    ("target", "body", "param"),
    [
        ("create", {"metadata": {}, "meta": {"a": "b"}}, "meta"),
        ("create", {"items": [{"role": "user", "content": "x", "name": "n"}]}, "items[0].name"),
        ("update", {"meta": {"a": "b"}}, "meta"),
        ("update", {"metadata": {"a": "b"}, "merge": True}, "merge"),
        ("items.create", {"items": msgs(1), "include": []}, "include"),
        ("items.create", {"items": [*msgs(1), {**msgs(1)[0], "colour": 1}]}, "items[1].colour"),
    ],
)
def test_a_parameter_openai_does_not_know_is_refused_and_writes_nothing(
    client: OpenAI, http: httpx.Client, target: str, body: dict[str, Any], param: str
) -> None:
    """A misspelt parameter is OpenAI's 400 `unknown_parameter`, not silently dropped."""
    conv = client.conversations.create(metadata={"keep": "me"}, items=msgs(1)).id
    before = http.get("/v1/events", params={"order": "desc", "limit": 1}).json()["last_id"]
    path = {
        "create": "/v1/conversations",
        "update": f"/v1/conversations/{conv}",
        "items.create": f"/v1/conversations/{conv}/items",
    }[target]
    resp = send(http, "POST", path, json=body)
    assert_error(
        resp, 400, param=param, code="unknown_parameter", message=f"Unknown parameter: '{param}'."
    )
    assert http.get("/v1/events", params={"order": "desc", "limit": 1}).json()["last_id"] == before
    assert client.conversations.retrieve(conv).metadata == {"keep": "me"}
    assert texts(client, conv) == ["m0"]


def test_unknown_parameters_through_the_sdk(client: OpenAI, conv: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.conversations.create(metadata={"a": "b"}, extra_body={"tags": ["x"]})
    assert_sdk_error(exc, 400, param="tags", code="unknown_parameter")
    with pytest.raises(openai.BadRequestError) as exc:
        client.conversations.items.create(
            conv,
            items=[{"role": "user", "content": "x", "metadata": {}}],  # type: ignore[typeddict-unknown-key]
        )
    assert_sdk_error(exc, 400, param="items[0].metadata", code="unknown_parameter")


def test_listed_items_sent_back_are_accepted(client: OpenAI, conv: str) -> None:
    """Items as we list them (with `id`, `status`, `created_at`) are valid input again."""
    client.conversations.items.create(conv, items=msgs(2))
    listed = client.conversations.items.list(conv, order="asc").to_dict()["data"]
    other = client.conversations.create(items=listed)
    again = client.conversations.items.list(other.id, order="asc").to_dict()["data"]
    assert [i["content"] for i in again] == [i["content"] for i in listed]


def test_every_sdk_parameter_of_the_conversation_bodies_is_known() -> None:
    """A parameter the SDK gains (i.e. OpenAI added it) must be accepted or implemented."""
    from openai.types.conversations import (
        conversation_create_params,
        conversation_update_params,
        item_create_params,
    )

    from api.routes import conversations, items

    assert set(conversation_create_params.ConversationCreateParams.__annotations__) <= (
        conversations.CREATE_PARAMS
    )
    assert set(conversation_update_params.ConversationUpdateParams.__annotations__) <= (
        conversations.UPDATE_PARAMS
    )
    assert set(item_create_params.ItemCreateParams.__annotations__) - {"include"} <= (
        items.CREATE_PARAMS
    )


def test_a_safety_identifier_is_taken_and_checked(client: OpenAI, http: httpx.Client) -> None:
    """openai 3.60 sends it on conversations.create; the store does not act on it."""
    conv = client.conversations.create(metadata={"a": "b"}, safety_identifier="user-123")
    assert client.conversations.retrieve(conv.id).metadata == {"a": "b"}
    resp = send(http, "POST", "/v1/conversations", json={"safety_identifier": 5})
    assert_error(resp, 400, param="safety_identifier", code="invalid_type")


# --- items: counts and types ---


def test_create_with_21_items_rejected(client: OpenAI, http: httpx.Client) -> None:
    before = newest_conversation(http)
    with pytest.raises(openai.BadRequestError) as exc:
        client.conversations.create(items=msgs(21))  # type: ignore[arg-type]
    assert_sdk_error(exc, 400, param="items", code="array_above_max_length")
    assert "20" in exc.value.message and "21" in exc.value.message
    assert newest_conversation(http) == before


def test_create_with_20_items_lists_all_in_order(client: OpenAI) -> None:
    conv = client.conversations.create(items=msgs(20))  # type: ignore[arg-type]
    assert texts(client, conv.id) == [f"m{i}" for i in range(20)]


def test_items_create_with_21_rejected(client: OpenAI, conv: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.conversations.items.create(conv, items=msgs(21))  # type: ignore[arg-type]
    assert_sdk_error(exc, 400, param="items", code="array_above_max_length")
    assert texts(client, conv) == []


def test_items_create_with_20_accepted_in_order(client: OpenAI, conv: str) -> None:
    created = client.conversations.items.create(conv, items=msgs(20, "n"))  # type: ignore[arg-type]
    assert [i.content[0].text for i in created.data] == [f"n{i}" for i in range(20)]  # type: ignore[union-attr]
    assert texts(client, conv) == [f"n{i}" for i in range(20)]


def test_items_create_with_empty_items_rejected(client: OpenAI, conv: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.conversations.items.create(conv, items=[])
    assert_sdk_error(exc, 400, param="items", code="empty_array")


@pytest.mark.parametrize("kwargs", [{"json": {}}, {}])
def test_items_create_without_items_rejected(
    http: httpx.Client, conv: str, kwargs: dict[str, Any]
) -> None:
    resp = send(http, "POST", f"/v1/conversations/{conv}/items", **kwargs)
    assert_error(
        resp,
        400,
        param="items",
        code="missing_required_parameter",
        message="Missing required parameter: 'items'.",
    )


@pytest.mark.parametrize("items", ["abc", 5, True, {"role": "user", "content": "x"}])
@pytest.mark.parametrize("target", ["create", "items.create"])
def test_items_not_an_array_rejected(
    http: httpx.Client, conv: str, target: str, items: Any
) -> None:
    path = "/v1/conversations" if target == "create" else f"/v1/conversations/{conv}/items"
    resp = send(http, "POST", path, json={"items": items})
    assert_error(resp, 400, param="items", code="invalid_type")


def test_create_with_empty_items_accepted(client: OpenAI) -> None:
    conv = client.conversations.create(items=[])
    assert texts(client, conv.id) == []


def test_item_errors_name_the_item(http: httpx.Client, conv: str) -> None:
    body = {
        "items": [*msgs(1), {"role": "user", "content": [{"type": "output_text", "text": "x"}]}]
    }
    resp = send(http, "POST", f"/v1/conversations/{conv}/items", json=body)
    assert_error(resp, 400, param="items[1].content[0].type", code="invalid_value")


# --- no partial writes ---


@pytest.mark.parametrize(
    ("bad", "param"),
    [
        ({"type": "not_a_type"}, "items[2].type"),
        (
            {"role": "user", "content": [{"type": "refusal", "refusal": "x"}]},
            "items[2].content[0].type",
        ),
        ({"type": "function_call", "call_id": "c", "name": "f"}, "items[2].arguments"),
    ],
)
def test_items_create_with_one_bad_item_writes_nothing(
    client: OpenAI,
    http: httpx.Client,
    conv2: tuple[str, list[str]],
    bad: dict[str, Any],
    param: str,
) -> None:
    conv_id, before = conv2
    resp = send(
        http, "POST", f"/v1/conversations/{conv_id}/items", json={"items": [*msgs(2, "x"), bad]}
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param
    assert item_ids(http, conv_id) == before
    assert texts(client, conv_id) == ["m0", "m1"]


def test_create_with_one_bad_item_creates_nothing(client: OpenAI, http: httpx.Client) -> None:
    newest = client.conversations.create().id
    assert newest_conversation(http) == newest
    resp = send(
        http,
        "POST",
        "/v1/conversations",
        json={"metadata": {"a": "b"}, "items": [*msgs(2), {"type": "nope"}]},
    )
    assert_error(resp, 400, param="items[2].type", code="invalid_value")
    assert newest_conversation(http) == newest


def test_create_with_bad_metadata_and_good_items_creates_nothing(
    client: OpenAI, http: httpx.Client
) -> None:
    newest = client.conversations.create().id
    resp = send(http, "POST", "/v1/conversations", json={"metadata": {"a": 1}, "items": msgs(2)})
    assert_error(resp, 400, param="metadata.a", code="invalid_type")
    assert newest_conversation(http) == newest


# --- list parameters ---


@pytest.fixture(params=["conversations", "items"])
def list_path(request: pytest.FixtureRequest, client: OpenAI, conv2: tuple[str, list[str]]) -> str:
    if request.param == "conversations":
        client.conversations.create()  # at least two conversations exist
        return "/v1/conversations"
    return f"/v1/conversations/{conv2[0]}/items"


@pytest.mark.parametrize(
    ("limit", "code"),
    [
        ("0", "integer_below_min_value"),
        ("-1", "integer_below_min_value"),
        ("101", "integer_above_max_value"),
        ("1000000000000000000000", "integer_above_max_value"),
    ],
)
def test_limit_out_of_range_rejected(
    http: httpx.Client, list_path: str, limit: str, code: str
) -> None:
    resp = send(http, "GET", list_path, params={"limit": limit})
    err = assert_error(resp, 400, param="limit", code=code)
    assert limit in err["message"]


@pytest.mark.parametrize("limit", ["abc", "1.5", "", "1e2"])
def test_limit_not_an_integer_rejected(http: httpx.Client, list_path: str, limit: str) -> None:
    resp = send(http, "GET", list_path, params={"limit": limit})
    assert_error(resp, 400, param="limit", code="invalid_value")


def test_limit_1_and_100_accepted(http: httpx.Client, list_path: str) -> None:
    one = send(http, "GET", list_path, params={"limit": "1"})
    assert one.status_code == 200, one.text
    assert len(one.json()["data"]) == 1
    assert one.json()["has_more"] is True
    hundred = send(http, "GET", list_path, params={"limit": "100"})
    assert hundred.status_code == 200, hundred.text
    assert 2 <= len(hundred.json()["data"]) <= 100
    assert hundred.json()["first_id"] == one.json()["first_id"]


@pytest.mark.parametrize("order", ["sideways", "ASC", "random"])
def test_bad_order_rejected(http: httpx.Client, list_path: str, order: str) -> None:
    resp = send(http, "GET", list_path, params={"order": order})
    assert_error(resp, 400, param="order", code="invalid_value")


def test_order_asc_and_desc(client: OpenAI, conv2: tuple[str, list[str]]) -> None:
    conv_id, ids = conv2
    asc = client.conversations.items.list(conv_id, order="asc")
    desc = client.conversations.items.list(conv_id, order="desc")
    assert [i.id for i in asc.data] == ids
    assert [i.id for i in desc.data] == ids[::-1]


@pytest.mark.parametrize("value", ["bogus", "message.input_image", "reasoning.encrypted"])
def test_unknown_include_rejected(
    http: httpx.Client, conv2: tuple[str, list[str]], value: str
) -> None:
    conv_id, ids = conv2
    base = f"/v1/conversations/{conv_id}/items"
    for method, path, kwargs in [
        ("GET", base, {}),
        ("GET", f"{base}/{ids[0]}", {}),
        ("POST", base, {"json": {"items": msgs(1, "inc")}}),
    ]:
        for key in ("include", "include[]"):
            resp = send(http, method, path, params={key: value}, **kwargs)
            err = assert_error(resp, 400, param="include", code="invalid_value")
            assert f"'{value}'" in err["message"]
    assert item_ids(http, conv_id) == ids  # the refused create wrote nothing


def test_known_include_accepted(client: OpenAI, conv2: tuple[str, list[str]]) -> None:
    conv_id, ids = conv2
    include: list[Any] = ["message.input_image.image_url"]
    page = client.conversations.items.list(conv_id, include=include, order="asc")
    assert [i.id for i in page.data] == ids
    item = client.conversations.items.retrieve(ids[0], conversation_id=conv_id, include=include)
    assert item.id == ids[0]
    created = client.conversations.items.create(
        conv_id,
        items=msgs(1, "with-include"),  # type: ignore[arg-type]
        include=[*include, "reasoning.encrypted_content"],
    )
    assert len(created.data) == 1


@pytest.mark.parametrize("after", ["msg_does_not_exist", "a.b", "a b", "*", ">", "x" * 200])
def test_items_after_unknown_id_rejected(
    http: httpx.Client, conv2: tuple[str, list[str]], after: str
) -> None:
    conv_id, _ = conv2
    resp = send(http, "GET", f"/v1/conversations/{conv_id}/items", params={"after": after})
    assert_error(resp, 400, param="after", code="invalid_value")


def test_items_after_id_of_another_conversation_rejected(
    client: OpenAI, conv2: tuple[str, list[str]], conv: str
) -> None:
    _, ids = conv2
    with pytest.raises(openai.BadRequestError) as exc:
        client.conversations.items.list(conv, after=ids[0])
    assert_sdk_error(exc, 400, param="after", code="invalid_value")


def test_items_after_known_id_pages(client: OpenAI, conv2: tuple[str, list[str]]) -> None:
    conv_id, ids = conv2
    page = client.conversations.items.list(conv_id, after=ids[0], order="asc")
    assert [i.id for i in page.data] == ids[1:]


@pytest.mark.parametrize("after", ["conv_does_not_exist", "a b"])
def test_conversations_after_unknown_id_rejected(http: httpx.Client, conv: str, after: str) -> None:
    resp = send(http, "GET", "/v1/conversations", params={"after": after})
    assert_error(resp, 400, param="after", code="invalid_value")


# --- malformed bodies ---


@pytest.fixture(params=["create", "update", "items.create"])
def post_path(request: pytest.FixtureRequest, conv: str) -> str:
    return {
        "create": "/v1/conversations",
        "update": f"/v1/conversations/{conv}",
        "items.create": f"/v1/conversations/{conv}/items",
    }[request.param]


@pytest.mark.parametrize("raw", [b"{not json", b'{"items": [', b"{'a': 1}", b"\xff\xfe"])
def test_malformed_json_rejected(http: httpx.Client, post_path: str, raw: bytes) -> None:
    resp = send(http, "POST", post_path, content=raw, headers=JSON)
    err = assert_error(resp, 400)
    assert "JSON" in err["message"]


@pytest.mark.parametrize("raw", [b"[]", b'[{"metadata": {"a": "b"}}]', b'"text"', b"7"])
def test_non_object_json_body_rejected(http: httpx.Client, post_path: str, raw: bytes) -> None:
    resp = send(http, "POST", post_path, content=raw, headers=JSON)
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert isinstance(err["message"], str) and err["message"]


# --- not found ---

UNKNOWN = "conv_x"


def sdk_calls(client: OpenAI, conv_id: str) -> dict[str, Callable[[], Any]]:
    items = client.conversations.items
    return {
        "retrieve": lambda: client.conversations.retrieve(conv_id),
        "update": lambda: client.conversations.update(conv_id, metadata={"a": "b"}),
        "delete": lambda: client.conversations.delete(conv_id),
        "items.list": lambda: items.list(conv_id),
        "items.create": lambda: items.create(conv_id, items=msgs(1)),  # type: ignore[arg-type]
        "items.retrieve": lambda: items.retrieve("msg_x", conversation_id=conv_id),
        "items.delete": lambda: items.delete("msg_x", conversation_id=conv_id),
    }


OPERATIONS = [
    "retrieve",
    "update",
    "delete",
    "items.list",
    "items.create",
    "items.retrieve",
    "items.delete",
]


@pytest.mark.parametrize("op", OPERATIONS)
def test_unknown_conversation_is_404(client: OpenAI, op: str) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        sdk_calls(client, UNKNOWN)[op]()
    assert_sdk_error(exc, 404, message="Conversation with id 'conv_x' not found.")


def raw_calls(conv_path: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every route that names a conversation, with a body that would otherwise be valid."""
    return [
        ("GET", conv_path, {}),
        ("POST", conv_path, {"json": {"metadata": {"a": "b"}}}),
        ("DELETE", conv_path, {}),
        ("GET", f"{conv_path}/items", {}),
        ("POST", f"{conv_path}/items", {"json": {"items": msgs(1)}}),
        ("GET", f"{conv_path}/items/msg_x", {}),
        ("DELETE", f"{conv_path}/items/msg_x", {}),
    ]


@pytest.mark.parametrize(
    "conv_id",
    ["conv.a.>", "conv_*", "a b", "conv.x", ">", "*", "conv_\u00e9", "a" * 129, "$KV.x", "a\tb"],
)
def test_subject_unsafe_conversation_ids_are_404(http: httpx.Client, conv_id: str) -> None:
    path = f"/v1/conversations/{quote(conv_id, safe='')}"
    for method, p, kwargs in raw_calls(path):
        resp = send(http, method, p, **kwargs)
        assert_error(resp, 404, message=conv_not_found(conv_id))


def test_slash_in_conversation_id_is_404(http: httpx.Client) -> None:
    resp = send(http, "GET", "/v1/conversations/conv%2Fx")
    assert_error(resp, 404)


@pytest.mark.parametrize("item_id", ["msg_x", "msg_" + "0" * 48, "a.b", "a b", "*", ">", "é"])
def test_unknown_item_is_404(
    http: httpx.Client, client: OpenAI, conv2: tuple[str, list[str]], item_id: str
) -> None:
    conv_id, ids = conv2
    path = f"/v1/conversations/{conv_id}/items/{quote(item_id, safe='')}"
    for method in ("GET", "DELETE"):
        resp = send(http, method, path)
        assert_error(resp, 404, message=item_not_found(item_id))
    assert item_ids(http, conv_id) == ids


def test_unknown_item_is_404_through_the_sdk(client: OpenAI, conv: str) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.conversations.items.retrieve("msg_nope", conversation_id=conv)
    assert_sdk_error(exc, 404, message="Item with id 'msg_nope' not found.")
    with pytest.raises(openai.NotFoundError) as exc:
        client.conversations.items.delete("msg_nope", conversation_id=conv)
    assert_sdk_error(exc, 404, message="Item with id 'msg_nope' not found.")


def test_item_of_another_conversation_is_404(
    client: OpenAI, conv2: tuple[str, list[str]], conv: str
) -> None:
    _, ids = conv2
    with pytest.raises(openai.NotFoundError) as exc:
        client.conversations.items.retrieve(ids[0], conversation_id=conv)
    assert_sdk_error(exc, 404, message=item_not_found(ids[0]))
    with pytest.raises(openai.NotFoundError) as exc:
        client.conversations.items.delete(ids[0], conversation_id=conv)
    assert_sdk_error(exc, 404, message=item_not_found(ids[0]))


@pytest.mark.parametrize("op", OPERATIONS)
def test_deleted_conversation_is_404_everywhere(
    client: OpenAI, conv2: tuple[str, list[str]], op: str
) -> None:
    conv_id, ids = conv2
    deleted = client.conversations.delete(conv_id)
    assert deleted.deleted is True
    calls = sdk_calls(client, conv_id)
    calls["items.retrieve"] = lambda: client.conversations.items.retrieve(
        ids[0], conversation_id=conv_id
    )
    calls["items.delete"] = lambda: client.conversations.items.delete(
        ids[0], conversation_id=conv_id
    )
    with pytest.raises(openai.NotFoundError) as exc:
        calls[op]()
    assert_sdk_error(exc, 404, message=conv_not_found(conv_id))


def test_deleted_item_is_404(
    client: OpenAI, http: httpx.Client, conv2: tuple[str, list[str]]
) -> None:
    conv_id, ids = conv2
    conversation = client.conversations.items.delete(ids[0], conversation_id=conv_id)
    assert conversation.id == conv_id
    with pytest.raises(openai.NotFoundError) as exc:
        client.conversations.items.retrieve(ids[0], conversation_id=conv_id)
    assert_sdk_error(exc, 404, message=item_not_found(ids[0]))
    with pytest.raises(openai.NotFoundError) as exc:
        client.conversations.items.delete(ids[0], conversation_id=conv_id)
    assert_sdk_error(exc, 404, message=item_not_found(ids[0]))
    assert item_ids(http, conv_id) == ids[1:]
    # The other item is untouched.
    assert client.conversations.items.retrieve(ids[1], conversation_id=conv_id).id == ids[1]


# --- routes and methods ---


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nope"),
        ("GET", "/nope"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/conversations/conv_x/things"),
        ("GET", "/v1/conversations/conv_x/items/msg_x/extra"),
        ("GET", "/v2/conversations"),
        # A trailing slash is another URL, as at OpenAI (Starlette answered a bare 307).
        ("GET", "/v1/conversations/conv_x/"),
        ("POST", "/v1/conversations/conv_x/items/"),
        ("GET", "/v1/responses/"),
    ],
)
def test_unknown_route_is_404(http: httpx.Client, method: str, path: str) -> None:
    assert_error(send(http, method, path), 404, message=NOT_FOUND_ROUTE)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("PUT", "/v1/conversations"),
        ("DELETE", "/v1/conversations"),
        ("PATCH", "/v1/conversations/{conv}"),
        ("PUT", "/v1/conversations/{conv}"),
        ("PUT", "/v1/conversations/{conv}/items"),
        ("DELETE", "/v1/conversations/{conv}/items"),
        ("POST", "/v1/conversations/{conv}/items/msg_x"),
        # responses.input_tokens.count and responses.compact: not implemented (README)
        ("POST", "/v1/responses/input_tokens"),
        ("POST", "/v1/responses/compact"),
    ],
)
def test_wrong_method_is_405(http: httpx.Client, conv: str, method: str, path: str) -> None:
    resp = send(http, method, path.format(conv=conv), json={})
    assert_error(resp, 405, message=NOT_FOUND_ROUTE)


# --- property-style sweep: malformed bodies never make a 5xx ---

DEEP = 3000


def j(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def user(content: Any) -> bytes:
    return j({"items": [{"role": "user", "content": content}]})


MALFORMED: list[tuple[str, bytes]] = [
    ("array", b"[]"),
    ("array-of-objects", j([{"items": []}])),
    ("string", j("just a string")),
    ("number", b"42"),
    ("true", b"true"),
    ("huge-float", b"1e999"),
    ("items-string", j({"items": "abc"})),
    ("items-number", j({"items": 7})),
    ("items-object", j({"items": {"role": "user", "content": "x"}})),
    ("items-huge-int", b'{"items": 1' + b"0" * 5000 + b"}"),
    ("item-null", j({"items": [None]})),
    ("item-list", j({"items": [[]]})),
    ("item-nested-list", j({"items": [[{"role": "user", "content": "x"}]]})),
    ("item-number", j({"items": [42]})),
    ("item-empty", j({"items": [{}]})),
    ("type-null", j({"items": [{"type": None}]})),
    ("type-number", j({"items": [{"type": 5}]})),
    ("type-list", j({"items": [{"type": ["message"]}]})),
    ("type-object", j({"items": [{"type": {"nested": "garbage"}}]})),
    ("role-object", j({"items": [{"role": {"a": 1}, "content": "x"}]})),
    ("content-missing", j({"items": [{"role": "user"}]})),
    ("content-number", user(5)),
    ("content-nested-lists", user([[["x"]]])),
    ("text-huge-float", user([{"type": "text", "text": 1e999}])),
    ("image-url-list", user([{"type": "image_url", "image_url": {"url": [1]}}])),
    ("input-file-empty", user([{"type": "input_file"}])),
    (
        "function-call-types",
        j({"items": [{"type": "function_call", "call_id": 1, "name": [], "arguments": {}}]}),
    ),
    (
        "output-object",
        j({"items": [{"type": "function_call_output", "call_id": "c", "output": {"a": 1}}]}),
    ),
    (
        "summary-text-null",
        j({"items": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": None}]}]}),
    ),
    (
        "status-huge-int",
        j({"items": [{"role": "user", "content": "x", "status": 10**30}]}),
    ),
    ("text-lone-surrogate", b'{"items": [{"role": "user", "content": "\\ud800"}]}'),
    ("deep-nesting", b'{"items": ' + b"[" * DEEP + b"]" * DEEP + b"}"),
    ("metadata-huge-int", j({"metadata": 10**32})),
    ("metadata-nested-list", j({"metadata": [["a", "b"]]})),
    ("metadata-nested-garbage", j({"metadata": {"k": {"deep": [1, {"x": None}]}}})),
    ("metadata-nan", b'{"metadata": {"k": NaN}}'),
    ("metadata-lone-surrogate", b'{"metadata": {"k": "\\udfff"}}'),
]


@pytest.mark.parametrize("target", ["create", "items.create"])
@pytest.mark.parametrize("raw", [raw for _, raw in MALFORMED], ids=[n for n, _ in MALFORMED])
def test_malformed_body_is_4xx_never_5xx(
    http: httpx.Client, conv: str, target: str, raw: bytes
) -> None:
    before = newest_conversation(http) if target == "create" else None
    path = "/v1/conversations" if target == "create" else f"/v1/conversations/{conv}/items"
    resp = send(http, "POST", path, content=raw, headers=JSON)
    assert 400 <= resp.status_code < 500, f"{resp.status_code}: {resp.text}"
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"
    assert isinstance(err["message"], str) and err["message"]
    if target == "create":
        assert newest_conversation(http) == before
    else:
        assert item_ids(http, conv) == []


WRITES = ["create", "update", "items.create", "responses"]


def json_write(target: str, conv: str) -> tuple[str, dict[str, Any]]:
    """A valid body for each JSON write, and where it goes."""
    return {
        "create": ("/v1/conversations", {"metadata": {"a": "b"}}),
        "update": (f"/v1/conversations/{conv}", {"metadata": {"a": "b"}}),
        "items.create": (f"/v1/conversations/{conv}/items", {"items": msgs(1)}),
        "responses": ("/v1/responses", {"model": "m", "input": "x"}),
    }[target]


@pytest.mark.parametrize("kind", ["text/plain", "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("target", WRITES)
def test_a_json_body_sent_as_another_type_says_so_and_writes_nothing(
    client: OpenAI, http: httpx.Client, conv: str, kind: str, target: str
) -> None:
    """Not "expected a JSON object" about a body that is one: the type is what is wrong."""
    path, body = json_write(target, conv)
    before = http.get("/v1/events", params={"order": "desc", "limit": 1}).json()["last_id"]
    resp = send(http, "POST", path, content=json.dumps(body), headers={"content-type": kind})
    assert_error(
        resp,
        400,
        message=f"Unsupported content type: '{kind}'. This endpoint takes a JSON body: "
        "send it with 'Content-Type: application/json'.",
    )
    assert http.get("/v1/events", params={"order": "desc", "limit": 1}).json()["last_id"] == before


@pytest.mark.parametrize("query", ["", "?x=1"])  # ?x=1: not the fast lane's, FastAPI's
@pytest.mark.parametrize("target", WRITES)
def test_a_body_without_a_content_type_is_read_as_json_on_every_route(
    http: httpx.Client, conv: str, target: str, query: str
) -> None:
    path, body = json_write(target, conv)
    request = http.build_request("POST", path + query, content=json.dumps(body))
    assert "content-type" not in request.headers
    resp = http.send(request)
    assert resp.status_code == 200, resp.text


def test_a_json_media_type_with_parameters_is_json(http: httpx.Client, conv: str) -> None:
    resp = send(
        http,
        "POST",
        f"/v1/conversations/{conv}",
        content=json.dumps({"metadata": {"a": "b"}}),
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert resp.status_code == 200 and resp.json()["metadata"] == {"a": "b"}, resp.text
