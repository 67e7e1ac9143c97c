"""Limits with clear errors, against the secured replica (64 KiB bodies, 4096-character
strings; the `slow` key may make 2 requests at once, refilled at 0.5 a second)."""

import json
import time

import httpx
import pytest
from openai import OpenAI, RateLimitError

from tests.conftest import secure_client
from tests.servers import SECURE_KEYS, SECURE_LIMITS

LIMIT = int(SECURE_LIMITS["CONVSTORE_MAX_BODY_BYTES"])
TEXT = int(SECURE_LIMITS["CONVSTORE_MAX_TEXT_CHARS"])


def auth(who: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {SECURE_KEYS[who]['key']}",
        "Content-Type": "application/json",
    }


@pytest.fixture(scope="module")
def h(secure_url):
    with httpx.Client(base_url=secure_url, timeout=30, headers=auth("bob")) as c:
        yield c


@pytest.fixture
def conv(h) -> str:
    return h.post("/v1/conversations", json={}).json()["id"]


def padded(body: dict, size: int) -> bytes:
    """`body` as JSON, padded with trailing whitespace (still valid JSON) to `size` bytes."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


def items_body(n: int = 20) -> dict:
    return {"items": [{"role": "user", "content": "w" * 3000} for _ in range(n)]}


def test_a_body_at_the_limit_passes_one_byte_more_is_413_and_writes_nothing(h, conv):
    at = h.post(f"/v1/conversations/{conv}/items", content=padded(items_body(), LIMIT))
    assert at.status_code == 200, at.text
    over = h.post(f"/v1/conversations/{conv}/items", content=padded(items_body(), LIMIT + 1))
    assert over.status_code == 413
    assert over.json() == {
        "error": {
            "message": f"Request too large: the body exceeds the limit of {LIMIT} bytes.",
            "type": "invalid_request_error",
            "param": None,
            "code": "request_too_large",
        }
    }
    assert len(h.get(f"/v1/conversations/{conv}/items", params={"limit": 100}).json()["data"]) == 20


def test_a_streamed_body_without_content_length_is_cut_off_at_the_limit(h, conv):
    sent = []

    def chunks():
        for _ in range(1000):  # up to 1 MB, far past the limit
            sent.append(1)
            yield b" " * 1024

    r = h.post(f"/v1/conversations/{conv}/items", content=chunks())
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
    assert "content-length" not in r.request.headers
    small = h.post(
        f"/v1/conversations/{conv}/items",
        content=iter([b'{"items": [{"role": "user", ', b'"content": "chunked"}]}']),
    )
    assert small.status_code == 200, small.text


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(secure_url):
    import socket

    host, port = secure_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            b"POST /v1/conversations HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {SECURE_KEYS['bob']['key']}\r\n".encode()
            + f"Content-Type: application/json\r\nContent-Length: {10 * LIMIT}\r\n\r\n".encode()
        )
        reply = b""  # answered without our sending a byte of the body
        while b"request_too_large" not in reply:
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413")
    assert b"request_too_large" in reply


def test_a_string_over_the_text_limit_is_400_naming_it(h, conv):
    body = {
        "items": [{"role": "user", "content": "ok"}, {"role": "user", "content": "x" * (TEXT + 1)}]
    }
    r = h.post(f"/v1/conversations/{conv}/items", json=body)
    assert r.status_code == 400
    assert r.json()["error"] == {
        "message": f"Invalid 'items[1].content': string too long. Expected a string with maximum "
        f"length {TEXT}, but got a string with length {TEXT + 1} instead.",
        "type": "invalid_request_error",
        "param": "items[1].content",
        "code": "string_above_max_length",
    }
    ok = h.post(
        f"/v1/conversations/{conv}/items", json={"items": [{"role": "user", "content": "x" * TEXT}]}
    )
    assert ok.status_code == 200
    r = h.post("/v1/conversations", json={"metadata": {"k" * (TEXT + 1): "v"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "string_above_max_length"


@pytest.mark.parametrize("depth", [65, 500, 30_000])
def test_deep_nesting_is_a_400_not_a_500(h, conv, depth):
    nested = "[" * depth + "]" * depth
    raw = f'{{"items": [{{"type": "message", "role": "user", "content": "a", "extra": {nested}}}]}}'
    r = h.post(f"/v1/conversations/{conv}/items", content=raw.encode())
    assert r.status_code == 400, r.text[:300]
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_the_rate_limit_answers_429_with_retry_after_per_key(secure_url):
    slow = secure_client(secure_url, "slow")
    other = secure_client(secure_url, "bob")
    statuses = []
    for _ in range(3):
        try:
            slow.conversations.create()
            statuses.append(200)
        except RateLimitError as err:
            statuses.append(429)
            error = err.body
            retry_after = err.response.headers["retry-after"]
            limit_header = err.response.headers["x-ratelimit-limit-requests"]
    assert statuses == [200, 200, 429]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    assert "Please try again in" in error["message"]
    assert retry_after in ("1", "2") and limit_header == "2"
    other.conversations.create()  # other keys are not slowed down
    time.sleep(int(retry_after))
    slow.conversations.create()
    # The SDK's own retries honour Retry-After: with them the next call just takes longer.
    patient = OpenAI(base_url=f"{secure_url}/v1", api_key=SECURE_KEYS["slow"]["key"], max_retries=3)
    began = time.monotonic()
    patient.conversations.create()
    assert time.monotonic() - began >= 0.5


def test_a_megabyte_of_nesting_in_open_mode_is_a_400_too(http):
    conv = http.post("/v1/conversations", json={}).json()["id"]
    nested = "[" * 1_000_000 + "]" * 1_000_000
    r = http.post(f"/v1/conversations/{conv}/items", content=f'{{"items": {nested}}}'.encode())
    assert r.status_code == 400, r.text[:300]


@pytest.mark.parametrize("after", [2**63, 2**64, 10**30])
def test_a_log_position_beyond_int64_is_400_not_a_nats_error(h, conv, after):
    for path in (f"/v1/conversations/{conv}/events", "/v1/events"):
        headers = {"Authorization": f"Bearer {SECURE_KEYS['root']['key']}"}
        r = h.get(path, params={"after": str(after)}, headers=headers)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "after"
        r = h.get(
            path, headers={**headers, "Last-Event-ID": str(after), "Accept": "text/event-stream"}
        )
        assert r.status_code == 400, r.text


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/v1/responses", b'{"model": "m", "input": "x", "temperature": NaN}'),
        ("/v1/responses", b'{"model": "m", "input": "x", "top_p": -Infinity}'),
        (
            "/v1/conversations",
            b'{"metadata": {}, "items": [{"role": "user", "content": "a"}], "x": Infinity}',
        ),
        (
            "/v1/conversations/{conv}/items",
            b'{"items": [{"type": "function_call_output", '
            b'"call_id": "c", "output": "o", "n": NaN}]}',
        ),
    ],
)
def test_nan_and_infinity_are_not_json_400_and_write_nothing(h, conv, path, raw):
    """Python's parser takes NaN and Infinity (and stored them as null); JSON has neither."""
    before = h.get(f"/v1/conversations/{conv}/events", params={"order": "desc"}).json()
    r = h.post(path.format(conv=conv), content=raw)
    assert r.status_code == 400, r.text[:300]
    assert r.json()["error"]["message"].startswith("We could not parse the JSON body")
    after = h.get(f"/v1/conversations/{conv}/events", params={"order": "desc"}).json()
    assert after["data"][0]["seq"] == before["data"][0]["seq"]
    # The words themselves, in strings, are ordinary text.
    ok = h.post(
        f"/v1/conversations/{conv}/items",
        json={"items": [{"role": "user", "content": "NaN and Infinity"}]},
    )
    assert ok.status_code == 200, ok.text[:300]
