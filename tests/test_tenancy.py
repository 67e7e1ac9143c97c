"""API keys and tenants over real HTTP against the secured replica (conftest `secure_url`).

Every endpoint must refuse another tenant's conversation with the very 404 a nonexistent
id gets (never a 403), and must leave it untouched.
"""

import hashlib
import secrets
from typing import Any

import httpx
import pytest
from openai import AuthenticationError, NotFoundError

from tests.conftest import secure_client
from tests.servers import ENV_KEY, SECURE_KEYS


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECURE_KEYS[who]['key']}"}


@pytest.fixture(scope="module")
def h(secure_url):
    with httpx.Client(base_url=secure_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def alice(secure_url):
    return secure_client(secure_url, "alice")


@pytest.fixture(scope="module")
def bob(secure_url):
    return secure_client(secure_url, "bob")


def events_of(h: httpx.Client, conv: str, who: str = "alice") -> list[dict[str, Any]]:
    r = h.get(f"/v1/conversations/{conv}/events", params={"limit": 100}, headers=auth(who))
    assert r.status_code == 200, r.text
    return r.json()["data"]


@pytest.fixture
def owned(alice, h) -> dict[str, Any]:
    """Alice's conversation with two items, and a log position inside its history."""
    conv = alice.conversations.create(
        metadata={"owner": "alice"},
        items=[{"role": "user", "content": "secret"}, {"role": "user", "content": "more"}],
    )
    items = alice.conversations.items.list(conv.id, order="asc").data
    history = events_of(h, conv.id)
    return {"conv": conv.id, "item": items[0].id, "seq": history[-1]["seq"], "events": history}


def fake_conversation() -> str:
    return f"conv_{secrets.token_hex(24)}"


# Every conversation endpoint: method, path, query, JSON body.
ENDPOINTS: list[tuple[str, str, dict[str, str] | None, dict[str, Any] | None]] = [
    ("GET", "/v1/conversations/{c}", None, None),
    ("GET", "/v1/conversations/{c}", {"as_of": "{seq}"}, None),
    ("GET", "/v1/conversations/{c}", {"as_of": "2999-01-01T00:00:00Z"}, None),
    ("POST", "/v1/conversations/{c}", None, {"metadata": {"taken": "yes"}}),
    ("POST", "/v1/conversations/{c}/items", None, {"items": [{"role": "user", "content": "x"}]}),
    ("GET", "/v1/conversations/{c}/items", None, None),
    ("GET", "/v1/conversations/{c}/items", {"as_of": "{seq}"}, None),
    ("GET", "/v1/conversations/{c}/items", {"after": "{i}"}, None),
    ("GET", "/v1/conversations/{c}/items/{i}", None, None),
    ("GET", "/v1/conversations/{c}/items/{i}", {"as_of": "{seq}"}, None),
    ("DELETE", "/v1/conversations/{c}/items/{i}", None, None),
    ("GET", "/v1/conversations/{c}/events", None, None),
    ("GET", "/v1/conversations/{c}/events", {"stream": "true"}, None),
    ("GET", "/v1/conversations/{c}/events", {"order": "desc", "after": "1"}, None),
    ("DELETE", "/v1/conversations/{c}", None, None),
]
EVENT_ENDPOINTS = {i for i, e in enumerate(ENDPOINTS) if e[1].endswith("/events")}


def call(h: httpx.Client, who: str, endpoint: tuple, conv: str, item: str, seq: int):
    method, path, query, body = endpoint
    fill = {"c": conv, "i": item, "seq": seq}
    params = {k: v.format(**fill) for k, v in (query or {}).items()}
    return h.request(
        method, path.format(**fill), params=params, json=body, headers=auth(who), timeout=10
    )


@pytest.mark.parametrize("who", ["bob", "root"])
def test_another_tenants_key_gets_the_404_of_a_nonexistent_id_on_every_endpoint(h, owned, who):
    conv, item, seq = owned["conv"], owned["item"], owned["seq"]
    for n, endpoint in enumerate(ENDPOINTS):
        if who == "root" and n in EVENT_ENDPOINTS:
            continue  # admins may audit every tenant's events (next test)
        theirs = call(h, who, endpoint, conv, item, seq)
        missing_id = fake_conversation()
        missing = call(h, who, endpoint, missing_id, item, seq)
        assert theirs.status_code == 404, (endpoint, theirs.text)
        assert missing.status_code == 404, (endpoint, missing.text)
        assert theirs.json() == {
            "error": {
                "message": f"Conversation with id '{conv}' not found.",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
        assert theirs.json() == _swap(missing.json(), missing_id, conv), endpoint
        assert theirs.headers.get("content-type") == missing.headers.get("content-type")
    # Nothing was written, and the owner still sees all of it.
    assert events_of(h, conv) == owned["events"]
    got = h.get(f"/v1/conversations/{conv}", headers=auth("alice")).json()
    assert got["metadata"] == {"owner": "alice"}
    items = h.get(f"/v1/conversations/{conv}/items", headers=auth("alice")).json()["data"]
    assert len(items) == 2


def _swap(body: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    error = dict(body["error"])
    error["message"] = error["message"].replace(old, new)
    return {"error": error}


def test_the_owner_and_another_key_of_the_same_tenant_can_use_every_endpoint(h, owned):
    conv, item, seq = owned["conv"], owned["item"], owned["seq"]
    streams = [e for e in ENDPOINTS if (e[2] or {}).get("stream")]
    deletes = [e for e in ENDPOINTS if e[0] == "DELETE"]
    for who in ("alice", "alice2"):
        for endpoint in ENDPOINTS:
            if endpoint not in streams + deletes:  # the stream: the next test
                r = call(h, who, endpoint, conv, item, seq)
                assert r.status_code == 200, (who, endpoint, r.text)
    for endpoint in deletes:  # the item, then the conversation
        assert call(h, "alice2", endpoint, conv, item, seq).status_code == 200


def test_admins_read_any_tenants_conversation_events_but_users_not(h, owned):
    conv = owned["conv"]
    r = h.get(f"/v1/conversations/{conv}/events", headers=auth("root"))
    assert r.status_code == 200
    assert [e["seq"] for e in r.json()["data"]] == [e["seq"] for e in owned["events"]]
    with h.stream(
        "GET", f"/v1/conversations/{conv}/events", params={"stream": "true"}, headers=auth("root")
    ) as s:
        assert s.status_code == 200
        lines = s.iter_lines()
        assert next(lines) == ": connected"


def test_events_record_the_key_id_and_tenant_never_the_key(h, alice, secure_url):
    conv = alice.conversations.create(items=[{"role": "user", "content": "hi"}])
    other = secure_client(secure_url, "alice2")
    other.conversations.update(conv.id, metadata={"by": "alice2"})
    events = events_of(h, conv.id)
    assert events[0]["type"] == "ConversationCreated"
    assert events[0]["tenant"] == "acme"
    digest_prefix = "key_" + hashlib.sha256(SECURE_KEYS["alice2"]["key"].encode()).hexdigest()[:12]
    actors = [(e["actor"]["id"], e["actor"]["kind"], e["actor"]["tenant"]) for e in events]
    assert actors == [
        ("alice", "api_key", "acme"),
        ("alice", "api_key", "acme"),
        (digest_prefix, "api_key", "acme"),
    ]
    raw = h.get(f"/v1/conversations/{conv.id}/events", headers=auth("alice")).text
    assert all(spec["key"] not in raw for spec in SECURE_KEYS.values())


def test_a_deleted_conversations_events_stay_hidden_from_other_tenants(h, alice, owned):
    conv = owned["conv"]
    alice.conversations.delete(conv)
    assert h.get(f"/v1/conversations/{conv}/events", headers=auth("alice")).status_code == 200
    r = h.get(f"/v1/conversations/{conv}/events", headers=auth("bob"))
    assert r.status_code == 404
    assert r.json()["error"]["message"] == f"Conversation with id '{conv}' not found."


def all_ids(client) -> set[str]:
    r = client.get("/v1/conversations", params={"limit": 100})
    seen: set[str] = set()
    while True:
        body = r.json()
        seen |= {c["id"] for c in body["data"]}
        if not body["has_more"]:
            return seen
        r = client.get("/v1/conversations", params={"limit": 100, "after": body["last_id"]})


def test_lists_show_only_the_callers_tenant_and_foreign_cursors_are_unknown(
    h, alice, bob, secure_url
):
    mine = {alice.conversations.create().id for _ in range(3)}
    theirs = {bob.conversations.create().id for _ in range(2)}
    with httpx.Client(base_url=secure_url, headers=auth("alice"), timeout=30) as a:
        alice_sees = all_ids(a)
    with httpx.Client(base_url=secure_url, headers=auth("bob"), timeout=30) as b:
        bob_sees = all_ids(b)
    assert mine <= alice_sees and not (theirs & alice_sees)
    assert theirs <= bob_sees and not (mine & bob_sees)
    foreign = next(iter(theirs))
    missing = fake_conversation()
    r1 = h.get("/v1/conversations", params={"after": foreign}, headers=auth("alice"))
    r2 = h.get("/v1/conversations", params={"after": missing}, headers=auth("alice"))
    assert r1.status_code == r2.status_code == 400
    assert r1.json() == _swap(r2.json(), missing, foreign)


def test_the_global_event_feed_is_for_admin_keys_only(h, alice, bob):
    a = alice.conversations.create(items=[{"role": "user", "content": "a"}]).id
    b = bob.conversations.create(items=[{"role": "user", "content": "b"}]).id
    for params in ({}, {"stream": "true"}, {"order": "desc"}):
        r = h.get("/v1/events", params=params, headers=auth("bob"))
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "insufficient_permissions"
        assert r.json()["error"]["type"] == "invalid_request_error"
    r = h.get("/v1/events", params={"order": "desc", "limit": 100}, headers=auth("root"))
    assert r.status_code == 200
    seen = {e["conversation_id"] for e in r.json()["data"]}
    assert {a, b} <= seen


def test_a_missing_or_unknown_key_gets_openais_401(h, secure_url):
    for headers in (
        {},
        {"Authorization": "Bearer sk-not-a-key-at-all-1234"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {SECURE_KEYS['alice']['key']}"},
        {"Authorization": SECURE_KEYS["alice"]["key"]},
    ):
        for method, path in (("GET", "/v1/conversations"), ("POST", "/v1/conversations")):
            r = h.request(method, path, headers=headers, json={})
            assert r.status_code == 401, (headers, r.text)
            error = r.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["code"] == "invalid_api_key"
            assert error["param"] is None
            assert r.headers["www-authenticate"] == "Bearer"
    r = h.get("/v1/conversations", headers={"Authorization": "Bearer sk-not-a-key-at-all-1234"})
    assert r.json()["error"]["message"].startswith("Incorrect API key provided: sk-")
    assert "sk-not-a-key-at-all-1234" not in r.text
    r = h.get("/v1/conversations")
    assert r.json()["error"]["message"].startswith("You didn't provide an API key.")
    stranger = secure_client(secure_url, "alice")
    stranger.api_key = "sk-wrong-0123456789"
    with pytest.raises(AuthenticationError) as err:
        stranger.conversations.create()
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert h.get(path).status_code == 200, path


def test_a_key_from_the_environment_list_works(secure_url):
    from openai import OpenAI

    client = OpenAI(base_url=f"{secure_url}/v1", api_key=ENV_KEY[0], max_retries=0)
    conv = client.conversations.create(metadata={"via": "env"})
    assert client.conversations.retrieve(conv.id).metadata == {"via": "env"}
    with pytest.raises(NotFoundError):
        secure_client(secure_url, "alice").conversations.retrieve(conv.id)


def test_the_sdk_sees_another_tenants_conversation_as_not_found(alice, bob):
    conv = alice.conversations.create(items=[{"role": "user", "content": "private"}])
    item = alice.conversations.items.list(conv.id).data[0].id
    calls = [
        lambda: bob.conversations.retrieve(conv.id),
        lambda: bob.conversations.update(conv.id, metadata={"a": "b"}),
        lambda: bob.conversations.items.list(conv.id),
        lambda: bob.conversations.items.retrieve(item, conversation_id=conv.id),
        lambda: bob.conversations.items.create(conv.id, items=[{"role": "user", "content": "x"}]),
        lambda: bob.conversations.items.delete(item, conversation_id=conv.id),
        lambda: bob.conversations.delete(conv.id),
    ]
    for attempt in calls:
        with pytest.raises(NotFoundError) as err:
            attempt()
        assert err.value.status_code == 404
    assert len(alice.conversations.items.list(conv.id).data) == 1
