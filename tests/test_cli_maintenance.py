"""`convstore purge`, `rebuild` and `asyncapi` as an operator runs them."""

import json
import subprocess
import sys

from tests.servers import ROOT


def convstore(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "convstore", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_purge_command(client, http, nats_url):
    conv = client.conversations.create(items=[{"type": "message", "role": "user", "content": "x"}])
    done = convstore("purge", conv.id, "--reason", "erasure request 42", "--nats-url", nats_url)
    assert done.returncode == 0, done.stderr
    assert "purged 2 events" in done.stdout
    assert http.get(f"/v1/conversations/{conv.id}").status_code == 404
    record = http.get(f"/v1/conversations/{conv.id}/events").json()["data"]
    assert [(e["type"], e["reason"]) for e in record] == [
        ("ConversationPurged", "erasure request 42")
    ]
    again = convstore("purge", conv.id, "--nats-url", nats_url)
    assert again.returncode == 0, again.stderr
    assert "already purged" in again.stdout and "purged 2 events" not in again.stdout
    missing = convstore("purge", "conv_nope", "--nats-url", nats_url)
    assert missing.returncode == 1 and "no conversation" in missing.stderr


def test_rebuild_command_keeps_the_api_serving(client, client2, nats_url):
    conv = client.conversations.create(metadata={"k": "before"})
    client.conversations.items.create(
        conversation_id=conv.id, items=[{"type": "message", "role": "user", "content": "kept"}]
    )
    done = convstore("rebuild", "--nats-url", nats_url)
    assert done.returncode == 0, done.stderr
    assert "events/s" in done.stdout and "live views now in convstore_views_" in done.stdout
    # both replicas read the new views, and writes keep projecting
    assert client2.conversations.retrieve(conv.id).metadata == {"k": "before"}
    client.conversations.update(conversation_id=conv.id, metadata={"k": "after"})
    assert client2.conversations.retrieve(conv.id).metadata == {"k": "after"}
    texts = [i.content[0].text for i in client2.conversations.items.list(conversation_id=conv.id)]
    assert texts == ["kept"]


def test_asyncapi_command():
    done = convstore("asyncapi")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["info"]["title"] == "convstore events"
