"""Idempotency-Key: end to end against the secured replica (tenant `idem`), and the
middleware in-process over a real KV bucket, where a test app can fail on purpose."""

import asyncio
import json
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest
from nats.js.api import StreamInfo
from openai import AsyncOpenAI, ConflictError, NotFoundError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from api import idempotency
from api.auth import Authenticate
from api.idempotency import Claim, Idempotency, IdempotencyStore
from api.ratelimit import RateLimiter
from events.connection import connect
from projections.store import open_bucket
from tests.conftest import secure_client
from tests.servers import SECURE_KEYS


def key() -> dict[str, str]:
    return {"Idempotency-Key": secrets.token_hex(16)}


def auth(who: str = "idem") -> dict[str, str]:
    return {"Authorization": f"Bearer {SECURE_KEYS[who]['key']}"}


@pytest.fixture(scope="module")
def h(secure_url):
    with httpx.Client(base_url=secure_url, timeout=30, headers=auth()) as c:
        yield c


def count(h: httpx.Client) -> int:
    n, after = 0, None
    while True:
        params = {"limit": 100, **({"after": after} if after else {})}
        body = h.get("/v1/conversations", params=params).json()
        n += len(body["data"])
        if not body["has_more"]:
            return n
        after = body["last_id"]


# --------------------------------------------------------------------------- end to end


def test_a_retry_returns_the_first_answer_and_writes_nothing(h, secure_url):
    client = secure_client(secure_url, "idem")
    before = count(h)
    headers = key()
    first = client.conversations.create(metadata={"n": "1"}, extra_headers=headers)
    again = client.conversations.with_raw_response.create(
        metadata={"n": "1"}, extra_headers=headers
    )
    assert again.headers["idempotent-replayed"] == "true"
    assert again.parse() == first
    assert count(h) == before + 1
    # Without a key, the same body is simply a second conversation.
    client.conversations.create(metadata={"n": "1"})
    assert count(h) == before + 2


def test_the_same_key_with_another_body_or_query_is_409(h):
    headers = key()
    conv = h.post("/v1/conversations", json={}).json()["id"]
    body = {"items": [{"role": "user", "content": "once"}]}
    assert h.post(f"/v1/conversations/{conv}/items", json=body, headers=headers).status_code == 200
    other = {"items": [{"role": "user", "content": "twice"}]}
    for kwargs in (
        {"json": other},
        {"json": body, "params": {"include[]": "message.output_text.logprobs"}},
    ):
        r = h.post(f"/v1/conversations/{conv}/items", headers=headers, **kwargs)
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "idempotency_key_reused"
        assert r.json()["error"]["param"] == "Idempotency-Key"
    items = h.get(f"/v1/conversations/{conv}/items").json()["data"]
    assert [i["content"][0]["text"] for i in items] == ["once"]


def test_a_key_is_scoped_to_its_tenant_and_endpoint(h, secure_url):
    headers = key()
    a = h.post("/v1/conversations", json={}, headers=headers).json()["id"]
    b = h.post("/v1/conversations", json={}, headers={**headers, **auth("bob")}).json()["id"]
    assert a != b  # another tenant's request with the same key is its own
    r = h.post(f"/v1/conversations/{a}", json={"metadata": {}}, headers=headers)
    assert r.status_code == 200 and "idempotent-replayed" not in r.headers
    bob = secure_client(secure_url, "bob")
    with pytest.raises(NotFoundError):  # and it opens no door into another tenant
        bob.conversations.retrieve(a)


def test_errors_are_replayed_too(h):
    headers = key()
    missing = f"conv_{secrets.token_hex(24)}"
    body = {"items": [{"role": "user", "content": "x"}]}
    first = h.post(f"/v1/conversations/{missing}/items", json=body, headers=headers)
    again = h.post(f"/v1/conversations/{missing}/items", json=body, headers=headers)
    assert first.status_code == again.status_code == 404
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    bad = key()
    first = h.post("/v1/conversations", json={"metadata": "nope"}, headers=bad)
    again = h.post("/v1/conversations", json={"metadata": "nope"}, headers=bad)
    assert first.status_code == again.status_code == 400
    assert again.headers["idempotent-replayed"] == "true"


def test_bad_keys_and_other_methods(h):
    r = h.post("/v1/conversations", json={}, headers={"Idempotency-Key": "k" * 256})
    assert r.status_code == 400 and r.json()["error"]["param"] == "Idempotency-Key"
    conv = h.post("/v1/conversations", json={}).json()["id"]
    headers = key()
    for _ in range(2):  # a GET is not remembered
        r = h.get(f"/v1/conversations/{conv}", headers=headers)
        assert r.status_code == 200 and "idempotent-replayed" not in r.headers


async def test_concurrent_retries_with_one_key_write_once(h, secure_url):
    conv = h.post("/v1/conversations", json={}).json()["id"]
    headers = key()
    async with AsyncOpenAI(
        base_url=f"{secure_url}/v1", api_key=SECURE_KEYS["idem"]["key"], max_retries=0
    ) as client:
        results = await asyncio.gather(
            *(
                client.conversations.items.create(
                    conv,
                    items=[{"role": "user", "content": "exactly once"}],
                    extra_headers=headers,
                )
                for _ in range(12)
            )
        )
    assert len({r.data[0].id for r in results}) == 1
    items = h.get(f"/v1/conversations/{conv}/items").json()["data"]
    assert len(items) == 1


async def test_concurrent_requests_with_one_key_and_different_bodies_write_one(h, secure_url):
    conv = h.post("/v1/conversations", json={}).json()["id"]
    headers = key()
    async with AsyncOpenAI(
        base_url=f"{secure_url}/v1", api_key=SECURE_KEYS["idem"]["key"], max_retries=0
    ) as client:
        results = await asyncio.gather(
            *(
                client.conversations.items.create(
                    conv, items=[{"role": "user", "content": f"body {n}"}], extra_headers=headers
                )
                for n in range(8)
            ),
            return_exceptions=True,
        )
    ok = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, ConflictError)]
    assert len(ok) == 1 and len(refused) == 7, results
    assert len(h.get(f"/v1/conversations/{conv}/items").json()["data"]) == 1


async def test_records_are_kept_for_at_least_24_hours(nats_url, secure_url):
    nc = await connect([nats_url], "test")
    try:
        info: StreamInfo = await nc.jetstream().stream_info(f"KV_{idempotency.BUCKET}")
        assert info.config.max_age is not None and info.config.max_age >= 24 * 3600
    finally:
        await nc.close()


# --------------------------------------------------------------------------- in process


class Counter:
    """A test app's endpoints, counting how often each one really ran."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.fail_first: set[str] = set()

    def ran(self, name: str) -> int:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.calls[name]

    def app(self, store: IdempotencyStore) -> Starlette:
        async def flaky(request: Request) -> Response:
            n = self.ran("flaky")
            if n == 1:
                return JSONResponse({"error": "down"}, status_code=503)
            return JSONResponse({"n": n, "body": (await request.body()).decode()})

        async def crash(request: Request) -> Response:
            if self.ran("crash") == 1:
                raise RuntimeError("boom")
            return JSONResponse({"n": self.calls["crash"]})

        async def slow(request: Request) -> Response:
            n = self.ran("slow")
            await asyncio.sleep(0.5)
            return JSONResponse({"n": n})

        async def stream(request: Request) -> Response:
            self.ran("stream")

            async def frames() -> AsyncIterator[bytes]:
                yield b"data: 1\n\n"
                yield b"data: 2\n\n"

            return StreamingResponse(frames(), media_type="text/event-stream")

        async def big(request: Request) -> Response:
            return JSONResponse({"n": self.ran("big"), "pad": "x" * 5000})

        async def conflict(request: Request) -> Response:
            n = self.ran("conflict")
            return JSONResponse({"n": n}, status_code=409 if n == 1 else 200)

        routes = [
            Route(f"/v1/{f.__name__}", f, methods=["POST"])
            for f in (flaky, crash, slow, stream, big, conflict)
        ]
        app = Starlette(routes=routes)
        app.state.idempotency = store
        app.add_middleware(Idempotency)
        app.add_middleware(Authenticate, keys=None, limiter=RateLimiter(0, 0))
        return app


@pytest.fixture
async def local(nats_url) -> AsyncIterator[tuple[Counter, httpx.AsyncClient, IdempotencyStore]]:
    nc = await connect([nats_url], "test-idempotency")
    js = nc.jetstream()
    bucket = f"test_idem_{secrets.token_hex(4)}"
    store = IdempotencyStore(await open_bucket(js, bucket, ttl=600), max_record=4000)
    counter = Counter()
    transport = httpx.ASGITransport(app=counter.app(store), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield counter, client, store
    await js.delete_key_value(bucket)
    await nc.close()


async def test_a_5xx_is_not_kept_so_a_retry_after_an_outage_runs(local):
    counter, client, _ = local
    headers = key()
    first = await client.post("/v1/flaky", content=b"payload", headers=headers)
    assert first.status_code == 503
    second = await client.post("/v1/flaky", content=b"payload", headers=headers)
    third = await client.post("/v1/flaky", content=b"payload", headers=headers)
    assert second.status_code == third.status_code == 200
    assert second.json() == third.json() == {"n": 2, "body": "payload"}
    assert third.headers["idempotent-replayed"] == "true"
    assert counter.calls["flaky"] == 2


async def test_a_crash_releases_the_claim_and_a_transient_409_is_not_kept(local):
    counter, client, _ = local
    headers = key()
    assert (await client.post("/v1/crash", headers=headers)).status_code == 500
    assert (await client.post("/v1/crash", headers=headers)).json() == {"n": 2}
    headers = key()
    assert (await client.post("/v1/conflict", headers=headers)).status_code == 409
    assert (await client.post("/v1/conflict", headers=headers)).json() == {"n": 2}
    assert (await client.post("/v1/conflict", headers=headers)).json() == {"n": 2}
    assert counter.calls == {"crash": 2, "conflict": 2}


async def test_a_concurrent_retry_waits_for_the_first_and_gets_its_answer(local):
    counter, client, _ = local
    headers = key()
    answers = await asyncio.gather(*(client.post("/v1/slow", headers=headers) for _ in range(5)))
    assert {r.status_code for r in answers} == {200}
    assert {json.dumps(r.json()) for r in answers} == {'{"n": 1}'}
    assert counter.calls["slow"] == 1


async def test_a_retry_gives_up_waiting_with_a_409_in_progress(local, monkeypatch):
    counter, client, _ = local
    monkeypatch.setattr(idempotency, "WAIT", 0.2)
    headers = key()
    first = asyncio.create_task(client.post("/v1/slow", headers=headers))
    await asyncio.sleep(0.1)
    r = await client.post("/v1/slow", headers=headers)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "idempotency_request_in_progress"
    assert r.headers["retry-after"] == "1"
    assert (await first).status_code == 200
    assert counter.calls["slow"] == 1


async def test_a_claim_whose_owner_died_is_taken_over(local):
    counter, client, store = local
    headers = key()
    # Claim the key the way a request does, then "die": no heartbeat, no record.
    r = await client.post("/v1/slow", headers=headers)  # learn the record's key
    entries = await store.kv.keys()
    assert len(entries) == 1
    fingerprint = json.loads((await store.kv.get(entries[0])).value)["fingerprint"]
    stale = json.loads(Claim.pending(fingerprint, "dead"))
    stale["beat"] -= idempotency.LEASE + 1
    await store.kv.put(entries[0], json.dumps(stale).encode())
    again = await client.post("/v1/slow", headers=headers)
    assert r.json() == {"n": 1} and again.json() == {"n": 2}
    assert "idempotent-replayed" not in again.headers
    assert counter.calls["slow"] == 2


async def test_streamed_and_oversized_answers_are_not_replayed_but_not_rerun(local):
    counter, client, _ = local
    for path in ("/v1/stream", "/v1/big"):
        headers = key()
        first = await client.post(path, headers=headers)
        assert first.status_code == 200
        again = await client.post(path, headers=headers)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "idempotency_response_unavailable"
    assert counter.calls == {"stream": 1, "big": 1}
    assert first.json()["pad"] == "x" * 5000


async def test_a_body_cut_short_claims_nothing_and_runs_nothing(local):
    """A client that goes away before its whole body arrived leaves no claim and no record
    behind, so its retry with the whole body runs as a first request."""
    counter, client, _ = local
    headers = key()
    messages = [{"type": "http.request", "body": b'{"par', "more_body": True}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/big",
        "raw_path": b"/v1/big",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    await client._transport.app(scope, receive, send)
    assert sent == [] and "big" not in counter.calls
    whole = await client.post("/v1/big", content=b'{"part": 1}', headers=headers)
    assert whole.status_code == 200 and whole.json()["n"] == 1
    assert "idempotent-replayed" not in whole.headers
