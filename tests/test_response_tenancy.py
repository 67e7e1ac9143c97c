"""Responses belong to a tenant: another tenant's key (user or admin) gets, on every
responses endpoint, exactly the 404 a response that never existed gets, and changes nothing."""

import secrets
from typing import Any

import httpx
import pytest
from openai import OpenAI

from tests.conftest import secure_client
from tests.servers import SECURE_KEYS


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECURE_KEYS[who]['key']}"}


@pytest.fixture(scope="module")
def h(secure_url):
    with httpx.Client(base_url=secure_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def alice(secure_url) -> OpenAI:
    return secure_client(secure_url, "alice")


@pytest.fixture(scope="module")
def owned(alice: OpenAI) -> dict[str, str]:
    conv = alice.conversations.create()
    on_conv = alice.responses.create(model="m", conversation=conv.id, input="secret a")
    alone = alice.responses.create(model="m", input="secret b")
    return {"conv": conv.id, "on_conv": on_conv.id, "alone": alone.id}


ENDPOINTS: list[tuple[str, str, dict[str, str] | None]] = [
    ("GET", "/v1/responses/{r}", None),
    ("GET", "/v1/responses/{r}", {"stream": "true"}),
    ("GET", "/v1/responses/{r}/input_items", None),
    ("POST", "/v1/responses/{r}/cancel", None),
    ("DELETE", "/v1/responses/{r}", None),
    ("GET", "/v1/conversations/{r}/events", None),
]


def call(h: httpx.Client, who: str, method: str, path: str, params: Any) -> httpx.Response:
    return h.request(method, path, params=params, headers=auth(who))


@pytest.mark.parametrize("kind", ["on_conv", "alone"])
@pytest.mark.parametrize("who", ["bob", "root"])
@pytest.mark.parametrize(("method", "path", "params"), ENDPOINTS)
def test_other_tenants_get_the_404_of_a_missing_response(h, owned, kind, who, method, path, params):
    rid = owned[kind]
    if who == "root" and path.endswith("/events") and kind == "alone":
        # Cross-tenant event streams are what an admin key is for (README, Security).
        assert call(h, who, method, path.format(r=rid), params).status_code == 200
        return
    fake = f"resp_{secrets.token_hex(24)}"
    theirs = call(h, who, method, path.format(r=rid), params)
    missing = call(h, who, method, path.format(r=fake), params)
    assert theirs.status_code == missing.status_code == 404
    assert (
        theirs.json()
        == httpx.Response(404, content=missing.content.replace(fake.encode(), rid.encode())).json()
    )
    # Alice still has it, untouched.
    mine = call(h, "alice", "GET", f"/v1/responses/{rid}", None)
    assert mine.status_code == 200 and mine.json()["status"] == "completed"


def test_no_response_on_another_tenants_conversation(h, owned):
    for who in ("bob", "root"):
        r = h.post(
            "/v1/responses",
            json={"model": "m", "input": "hi", "conversation": owned["conv"]},
            headers=auth(who),
        )
        assert r.status_code == 404
        assert r.json()["error"]["message"] == f"Conversation with id '{owned['conv']}' not found."
    items = h.get(f"/v1/conversations/{owned['conv']}/items", headers=auth("alice")).json()
    assert len(items["data"]) == 2  # only alice's own turn


def test_no_continuing_another_tenants_response(h, owned):
    r = h.post(
        "/v1/responses",
        json={"model": "m", "input": "and?", "previous_response_id": owned["alone"]},
        headers=auth("bob"),
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "previous_response_id"
    assert "not found" in r.json()["error"]["message"]


def test_responses_record_the_key_and_tenant(h, alice: OpenAI):
    r = alice.responses.create(model="m", input="who am i")
    events = h.get(f"/v1/conversations/{r.id}/events", headers=auth("alice")).json()["data"]
    requested = events[0]
    assert requested["type"] == "ResponseRequested" and requested["tenant"] == "acme"
    assert requested["actor"]["id"] == "alice" and requested["actor"]["kind"] == "api_key"
    bob = h.get(f"/v1/responses/{r.id}", headers=auth("bob"))
    assert bob.status_code == 404
