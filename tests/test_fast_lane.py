"""The fast lane (api/fast_lane.py): which requests it serves, and that what it serves
is what FastAPI answers for the same request (a parameter FastAPI ignores, `x`, sends
a request down FastAPI's path)."""

from typing import Any

import httpx
import pytest

from api.fast_lane import _get, _post

CONV = "conv_" + "a" * 48
ITEMS = f"/v1/conversations/{CONV}/items"


@pytest.mark.parametrize(
    ("path", "query", "served"),
    [
        (ITEMS, {}, True),
        (ITEMS, {"limit": "20", "order": "desc", "after": "msg_1", "include[]": "x"}, True),
        (ITEMS, {"limit": "020"}, True),
        (ITEMS, {"limit": "-1"}, False),  # not plain digits: FastAPI's validation
        (ITEMS, {"limit": ""}, False),
        (ITEMS, {"limit": "٣"}, False),  # a digit, not an ASCII one
        (ITEMS, {"x": "1"}, False),
        (ITEMS, None, False),  # a repeated parameter
        (f"{ITEMS}/msg_1", {}, True),
        (f"{ITEMS}/msg_1", {"as_of": "5"}, True),
        (f"{ITEMS}/msg_1", {"limit": "5"}, False),
        (f"/v1/conversations/{CONV}", {}, True),
        (f"/v1/conversations/{CONV}", {"include": "x"}, False),
        ("/v1/conversations", {}, False),  # the list of conversations
        (f"/v1/conversations/{CONV}/events", {}, False),
        (f"{ITEMS}/", {}, False),  # FastAPI redirects a trailing slash
        (f"/v1/conversations/{CONV}/", {}, False),
        ("/v1/responses/resp_1", {}, False),
    ],
)
def test_which_gets_it_serves(path: str, query: dict[str, str] | None, served: bool) -> None:
    assert (_get(path, query) is not None) is served


async def _post_served(path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    scope: dict[str, Any] = {"path": path, "headers": headers, "query_string": b""}
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    handler, replayed = await _post(path, scope, receive)
    assert (await replayed())["body"] == body  # the fallback still gets the body
    return handler is not None


JSON = [(b"content-type", b"application/json; charset=utf-8")]


@pytest.mark.parametrize(
    ("path", "body", "headers", "served"),
    [
        (ITEMS, b'{"items": []}', JSON, True),
        (ITEMS, b"", [], True),  # no body: FastAPI passes None
        ("/v1/conversations", b"{}", JSON, True),
        ("/v1/responses", b'{"model": "m", "input": "hi"}', JSON, True),
        ("/v1/responses/resp_1/cancel", b"{}", JSON, False),
        (ITEMS, b"[1]", JSON, False),  # not an object: FastAPI's 400
        (ITEMS, b"{", JSON, False),
        (ITEMS, b"[" * 30_000 + b"]" * 30_000, JSON, False),  # too deep for json.loads
        (ITEMS, b"{}", [(b"content-type", b"text/plain")], False),
        (f"/v1/conversations/{CONV}", b"{}", JSON, False),  # update: FastAPI's
        (f"{ITEMS}/msg_1", b"{}", JSON, False),
    ],
)
async def test_which_posts_it_serves(
    path: str, body: bytes, headers: list[tuple[bytes, bytes]], served: bool
) -> None:
    assert await _post_served(path, body, headers) is served


def _same(fast: httpx.Response, slow: httpx.Response) -> None:
    assert fast.status_code == slow.status_code
    assert fast.headers["content-type"] == slow.headers["content-type"]
    assert fast.json() == slow.json()


def test_it_answers_as_fastapi_does(http: httpx.Client) -> None:
    conv = http.post("/v1/conversations", json={"metadata": {"k": "é"}}).json()["id"]
    added = http.post(
        f"/v1/conversations/{conv}/items",
        json={
            "items": [{"type": "message", "role": "user", "content": f"m{i} ü"} for i in range(5)]
        },
    )
    assert added.status_code == 200
    item = added.json()["data"][0]["id"]
    base = f"/v1/conversations/{conv}"
    for path in (
        f"{base}/items",
        f"{base}/items?limit=2&order=asc",
        f"{base}/items?limit=2&after={item}&order=asc",
        f"{base}/items?after=msg_missing",  # 400
        f"{base}/items?limit=0",  # 400
        f"{base}/items?order=sideways",  # 400
        f"{base}/items?include[]=bogus",  # 400
        f"{base}/items?as_of=1",  # 404: not yet created at 1
        f"{base}/items/{item}",
        f"{base}/items/msg_missing",  # 404
        f"{base}/items/not-an-id",  # 400
        base,
        f"{base}?as_of=1",
        "/v1/conversations/conv_missing",  # 400 or 404, as FastAPI says
        f"/v1/conversations/conv_{'0' * 48}/items",  # 404
    ):
        joiner = "&" if "?" in path else "?"
        _same(http.get(path), http.get(f"{path}{joiner}x=1"))


def test_its_writes_answer_as_fastapi_does(http: httpx.Client) -> None:
    def shape(r: httpx.Response) -> Any:
        body = r.json()
        if "error" in body:
            return r.status_code, body
        return r.status_code, {k: type(v).__name__ for k, v in body.items()}, body.get("object")

    conv = http.post("/v1/conversations", json={}).json()["id"]
    for path, body in (
        ("/v1/conversations", {"metadata": {"a": "b"}}),
        ("/v1/conversations", {"metadata": "nope"}),  # 400
        (f"/v1/conversations/{conv}/items", {"items": [{"role": "user", "content": "x"}]}),
        (f"/v1/conversations/{conv}/items", {"items": []}),  # 400
        (f"/v1/conversations/{conv}/items", {}),  # 400: items required
        ("/v1/conversations/conv_missing/items", {"items": [{"role": "user", "content": "x"}]}),
    ):
        assert shape(http.post(path, json=body)) == shape(http.post(f"{path}?x=1", json=body))
    fast = http.post(f"/v1/conversations/{conv}/items", content=b"")
    slow = http.post(f"/v1/conversations/{conv}/items?x=1", content=b"")
    _same(fast, slow)


def test_healthz(http: httpx.Client) -> None:
    r = http.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert r.headers["content-type"] == "application/json"


def test_its_responses_answer_as_fastapi_does(http: httpx.Client) -> None:
    def shape(r: httpx.Response) -> Any:
        if r.headers["content-type"].startswith("text/event-stream"):
            return r.status_code, [
                line.split(" ")[1] for line in r.text.splitlines() if line.startswith("event: ")
            ]
        body = r.json()
        if set(body) == {"error"}:
            return r.status_code, body
        return r.status_code, body["object"], body["status"], body["output"][0]["content"]

    def conv() -> str:
        return str(http.post("/v1/conversations", json={}).json()["id"])

    for body in (
        {"model": "echo-test", "input": "say this back"},
        {"model": "echo-test", "input": "say this back", "stream": True},
        {"model": "echo-test", "input": "again", "conversation": "new"},
        {"model": "echo-test"},  # 400: no input
        {"model": "echo-test", "input": "x", "temperature": 9},  # 400
        {"input": "x"},  # 400: no model
    ):
        if body.get("conversation") == "new":  # each its own: the same context
            fast = http.post("/v1/responses", json={**body, "conversation": conv()})
            slow = http.post("/v1/responses?x=1", json={**body, "conversation": conv()})
        else:
            fast = http.post("/v1/responses", json=body)
            slow = http.post("/v1/responses?x=1", json=body)
        assert shape(fast) == shape(slow), body
