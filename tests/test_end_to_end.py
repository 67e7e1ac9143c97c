"""`convstore serve` as a user runs it: the reference's examples, a restart, an outage."""

import asyncio
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from convstore.embedded_nats import EmbeddedNats, free_port
from tests.servers import Service, api_process


@pytest.fixture
def serve(tmp_path):
    """Start `convstore serve` on a data dir; call again to restart on the same dir."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    running: list[Service] = []

    def start(*flags: str) -> str:
        service = Service(
            ["serve", "--port", str(port), "--data-dir", str(tmp_path / "data"), *flags],
            tmp_path / "serve.log",
        ).start()
        running.append(service)
        service.wait_http(url, "/readyz")
        return url

    yield start, running
    for service in running:
        service.stop()  # SIGTERM: serve stops its embedded nats-server too


def complete_workflow(client: OpenAI) -> tuple[str, list[str]]:
    """The reference's complete workflow example, step by step."""
    conversation = client.conversations.create(metadata={"user_id": "user_123"})
    items_response = client.conversations.items.create(
        conversation_id=conversation.id,
        items=[
            {
                "type": "message",
                "role": "system",
                "content": [{"type": "text", "text": "You are a helpful Python tutor."}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "text", "text": "How do I read a file in Python?"}],
            },
        ],
    )
    system_item, user_item = items_response.data
    listed = list(client.conversations.items.list(conversation_id=conversation.id, order="asc"))
    assert [(i.role, i.content[0].text) for i in listed] == [
        ("system", "You are a helpful Python tutor."),
        ("user", "How do I read a file in Python?"),
    ]
    assistant = client.conversations.items.create(
        conversation_id=conversation.id,
        items=[
            {
                "type": "message",
                "role": "assistant",
                "content": [
                    {
                        "type": "text",
                        "text": "You can read a file using: with open('file.txt', 'r') "
                        "as f: content = f.read()",
                    }
                ],
            }
        ],
    ).data[0]
    assert assistant.content[0].type == "output_text"
    client.conversations.update(
        conversation_id=conversation.id,
        metadata={"user_id": "user_123", "status": "resolved", "topic": "file_io"},
    )
    updated = client.conversations.retrieve(conversation_id=conversation.id)
    assert updated.metadata == {"user_id": "user_123", "status": "resolved", "topic": "file_io"}
    client.conversations.items.delete(conversation_id=conversation.id, item_id=user_item.id)
    remaining = [
        i.id for i in client.conversations.items.list(conversation_id=conversation.id, order="asc")
    ]
    assert remaining == [system_item.id, assistant.id]
    return conversation.id, remaining


def multimodal(client: OpenAI) -> str:
    conversation = client.conversations.create()
    client.conversations.items.create(
        conversation_id=conversation.id,
        items=[
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "text", "text": "What's in this image?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/image.jpg"}},
                ],
            }
        ],
    )
    client.conversations.items.create(
        conversation_id=conversation.id,
        items=[
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "text", "text": "I see a beautiful sunset over mountains."}],
            }
        ],
    )
    user, assistant = client.conversations.items.list(
        conversation_id=conversation.id, order="asc"
    ).data
    assert [p.type for p in user.content] == ["input_text", "input_image"]
    assert user.content[1].image_url == "https://example.com/image.jpg"
    assert assistant.content[0].text == "I see a beautiful sunset over mountains."
    return conversation.id


async def async_example(base: str) -> None:
    client = AsyncOpenAI(base_url=base, api_key="any", max_retries=0)
    conversation = await client.conversations.create(metadata={"user_id": "user_123"})
    await client.conversations.items.create(
        conversation_id=conversation.id,
        items=[
            {"type": "message", "role": "user", "content": [{"type": "text", "text": "Hello!"}]}
        ],
    )
    seen = [
        item.content[0].text
        async for item in await client.conversations.items.list(conversation_id=conversation.id)
    ]
    assert seen == ["Hello!"]
    await client.conversations.delete(conversation_id=conversation.id)
    await client.close()


def test_serve_examples_restart_and_data_intact(serve):
    start, running = serve
    base = start() + "/v1"
    client = OpenAI(base_url=base, api_key="any", max_retries=0)
    conv_id, items = complete_workflow(client)
    image_conv = multimodal(client)
    asyncio.run(async_example(base))
    to_delete = client.conversations.create().id
    client.conversations.delete(conversation_id=to_delete)

    assert running[0].stop(signal.SIGTERM) == 0, "serve did not shut down cleanly"
    base = start() + "/v1"
    client = OpenAI(base_url=base, api_key="any", max_retries=0)
    assert client.conversations.retrieve(conv_id).metadata["topic"] == "file_io"
    assert [
        i.id for i in client.conversations.items.list(conversation_id=conv_id, order="asc")
    ] == items
    assert len(client.conversations.items.list(conversation_id=image_conv).data) == 2
    assert httpx.get(f"{base}/conversations/{to_delete}").status_code == 404
    # and it keeps taking writes after the restart
    client.conversations.items.create(
        conversation_id=conv_id, items=[{"type": "message", "role": "user", "content": "again"}]
    )
    assert len(client.conversations.items.list(conversation_id=conv_id).data) == 3


def test_nats_outage_gives_503_then_recovers(tmp_path):
    nats = EmbeddedNats(tmp_path / "nats", sync_always=False)
    nats.start()
    api, url = api_process(nats.url, tmp_path / "api.log")
    projector = Service(["projector", "--nats-url", nats.url], tmp_path / "projector.log").start()
    try:
        api.wait_http(url, "/readyz")
        conv = httpx.post(f"{url}/v1/conversations", json={}).json()["id"]
        nats.stop()
        time.sleep(0.5)
        for method, path in [("GET", f"/v1/conversations/{conv}"), ("POST", "/v1/conversations")]:
            began = time.monotonic()
            r = httpx.request(method, url + path, json={} if method == "POST" else None, timeout=30)
            assert r.status_code == 503, r.text
            assert r.json()["error"]["type"] == "server_error"
            assert time.monotonic() - began < 3, "an outage must fail fast, not hang"
        assert httpx.get(f"{url}/readyz").status_code == 503
        assert httpx.get(f"{url}/healthz").status_code == 200

        nats.start()  # same port, same data: the API reconnects by itself
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            r = httpx.get(f"{url}/v1/conversations/{conv}")
            if r.status_code == 200:
                break
            time.sleep(0.2)
        assert r.status_code == 200, r.text
    finally:
        api.stop()
        projector.stop()
        nats.stop()


@pytest.mark.parametrize("api_processes", [1, 2])
def test_children_stop_when_serve_is_killed(serve, api_processes):
    """nats-server, the projector, the model worker and the API processes beyond serve's
    own all go when serve is SIGKILLed."""
    start, running = serve
    start("--api-processes", str(api_processes))
    # nats-server, the projector, the model worker, and `convstore api` children (started
    # once serve's own API answers)
    expected = 3 + api_processes - 1
    deadline = time.monotonic() + 10
    while True:
        found = subprocess.run(["pgrep", "-P", str(running[0].process.pid)], capture_output=True)
        children = [int(pid) for pid in found.stdout.decode().split()]
        if len(children) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.05)

    def alive() -> list[int]:
        out = []
        for pid in children:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][0]
            except OSError:
                continue
            if state != "Z":
                out.append(pid)
        return out

    assert len(alive()) == expected
    running[0].stop(signal.SIGKILL)  # no chance to clean up: the kernel tells the children
    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(), "a child outlived convstore serve"


def test_serve_answers_responses_offline_with_echo(serve):
    """The issue's flow against `convstore serve` with no model configured (echo)."""
    start, running = serve
    client = OpenAI(base_url=f"{start()}/v1", api_key="x", max_retries=0, timeout=30)
    conv = client.conversations.create()
    r1 = client.responses.create(model="gpt-4o-mini", conversation=conv.id, input="Hi, I am Ada.")
    r2 = client.responses.create(
        model="gpt-4o-mini", conversation=conv.id, input="What is my name?"
    )
    assert r1.output_text == "echo: Hi, I am Ada. (context: 1 messages)"
    assert r2.output_text == "echo: What is my name? (context: 3 messages)"
    assert len(client.conversations.items.list(conv.id).data) == 4
    events = list(
        client.responses.create(model="m", conversation=conv.id, input="Stream it", stream=True)
    )
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "echo: Stream it (context: 5 messages)"
    bg = client.responses.create(model="m", input="long job", background=True)
    assert bg.status == "queued"
    r3 = client.responses.create(model="m", input="and then?", previous_response_id=r1.id)
    assert r3.output_text == "echo: and then? (context: 3 messages)"
    running[-1].stop()
    client = OpenAI(base_url=f"{start()}/v1", api_key="x", max_retries=0, timeout=30)
    # After a restart everything is still there, and the background job has finished.
    deadline = time.monotonic() + 20
    while client.responses.retrieve(bg.id).status != "completed" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.responses.retrieve(bg.id).output_text == "echo: long job (context: 1 messages)"
    assert client.responses.retrieve(r2.id).output_text == r2.output_text
