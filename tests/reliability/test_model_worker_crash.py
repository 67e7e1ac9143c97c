"""A model worker killed with SIGKILL in the middle of a response: the response still
ends exactly once, and no output is duplicated or half-written into the conversation."""

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from convstore.embedded_nats import EmbeddedNats
from tests.servers import Service, api_process, model_map
from tests.test_responses import token, upstream_streams, wait_status

pytestmark = pytest.mark.reliability


TERMINAL = {"ResponseCompleted", "ResponseFailed", "ResponseCancelled"}


class Stack:
    def __init__(self, nats_url: str, upstream_url: str, logs: Path) -> None:
        self.nats_url = nats_url
        self.logs = logs
        self.env = {"CONVSTORE_MODELS": model_map(upstream_url), "CONVSTORE_WORKER_ACK_WAIT": "2"}
        self.workers: list[Service] = []

    def start_worker(self, **env: str) -> Service:
        n = len(self.workers)
        worker = Service(
            ["worker", "--nats-url", self.nats_url],
            self.logs / f"worker{n}.log",
            {**self.env, **env},
        ).start()
        self.workers.append(worker)
        return worker


@pytest.fixture
def stack(fresh_nats: str, upstream_url: str, tmp_path: Path) -> Iterator[tuple[Stack, OpenAI]]:
    s = Stack(fresh_nats, upstream_url, tmp_path)
    projector = Service(["projector", "--nats-url", fresh_nats], tmp_path / "projector.log").start()
    api, url = api_process(fresh_nats, tmp_path / "api.log")
    s.start_worker()
    try:
        api.wait_http(url, "/readyz")
        yield s, OpenAI(base_url=f"{url}/v1", api_key="t", max_retries=0, timeout=60)
    finally:
        for service in [api, *s.workers, projector]:
            service.stop()


def thread_events(client: OpenAI, thread: str) -> list[dict[str, Any]]:
    base = str(client.base_url).rstrip("/")
    body = httpx.get(f"{base}/conversations/{thread}/events", params={"limit": 100}).json()
    return body["data"]


def kill(worker: Service) -> None:
    assert worker.process is not None
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait()


def test_worker_killed_before_any_output_is_retried_once(stack, upstream_url, report):
    s, client = stack
    t = token()
    conv = client.conversations.create()
    r = client.responses.create(
        model="fake-m", conversation=conv.id, input=f"SLOWSTART {t}", background=True
    )
    deadline = time.monotonic() + 20
    while not upstream_streams(upstream_url, t) and time.monotonic() < deadline:
        time.sleep(0.02)
    # The call starts while the claim is appended: wait for the claim to be stored too.
    assert wait_status(client, r.id, "in_progress").status == "in_progress"
    kill(s.workers[0])  # the upstream call is open and has not sent a token yet
    s.start_worker()
    done = wait_status(client, r.id, "completed", "failed", timeout=60)
    events = thread_events(client, conv.id)
    types = [e["type"] for e in events]
    report(
        {
            "fault": "kill -9 of the model worker after its upstream call opened, before output",
            "responses": 1,
            "ended": done.status,
            "terminal_events": sum(t in TERMINAL for t in types),
            "items_added": types.count("ItemAdded"),
            "attempts": types.count("ResponseInProgress"),
        }
    )
    assert done.status == "completed"
    assert types.count("ResponseCompleted") == 1 and "ResponseFailed" not in types
    assert [e["attempt"] for e in events if e["type"] == "ResponseInProgress"] == [1, 2]
    items = client.conversations.items.list(conv.id, order="asc").data
    assert [i.role for i in items] == ["user", "assistant"]
    assert items[1].id == done.output[0].id
    # One stream, numbered without gaps or repeats across both attempts.
    replay = list(client.responses.retrieve(r.id, stream=True))
    assert [e.sequence_number for e in replay] == list(range(len(replay)))
    assert [e.type for e in replay].count("response.created") == 1
    assert replay[-1].type == "response.completed"
    assert len(upstream_streams(upstream_url, t)) == 2


def test_worker_killed_mid_stream_fails_the_response_once(stack, upstream_url, report):
    s, client = stack
    t = token()
    conv = client.conversations.create()
    r = client.responses.create(
        model="fake-m", conversation=conv.id, input=f"SLOW {t}", background=True
    )
    deltas = 0
    stream = client.responses.retrieve(r.id, stream=True)
    for event in stream:
        deltas += event.type == "response.output_text.delta"
        if deltas == 5:
            break
    stream.close()
    kill(s.workers[0])  # a client has seen part of the output
    s.start_worker()
    done = wait_status(client, r.id, "completed", "failed", timeout=60)
    time.sleep(1)  # a late duplicate would show up now
    types = [e["type"] for e in thread_events(client, conv.id)]
    report(
        {
            "fault": "kill -9 of the model worker after 5 deltas had reached a client",
            "responses": 1,
            "ended": done.status,
            "terminal_events": sum(t in TERMINAL for t in types),
            "items_added": types.count("ItemAdded"),
            "attempts": types.count("ResponseInProgress"),
        }
    )
    assert done.status == "failed"
    assert done.error is not None and done.error.code == "server_error"
    assert types.count("ResponseFailed") == 1
    assert "ResponseCompleted" not in types and "ItemAdded" not in types
    assert client.conversations.items.list(conv.id).data == []
    replay = list(client.responses.retrieve(r.id, stream=True))
    assert [e.sequence_number for e in replay] == list(range(len(replay)))
    assert replay[-1].type == "response.failed"
    assert len(upstream_streams(upstream_url, t)) == 1  # not called again


def test_upstream_timeout_fails_after_bounded_retries(stack, upstream_url):
    s, client = stack
    kill(s.workers[0])
    s.start_worker(CONVSTORE_UPSTREAM_TIMEOUT="1")
    t = token()
    started = time.monotonic()
    r = client.responses.create(model="fake-m", input=f"HANG {t}")
    assert r.status == "failed" and r.error is not None and r.error.code == "timeout"
    assert len(upstream_streams(upstream_url, t)) == 3
    assert time.monotonic() - started < 15


def test_responses_recover_after_a_nats_outage(tmp_path, upstream_url):
    """nats-server killed and restarted: the worker reconnects and keeps taking responses."""
    nats = EmbeddedNats(tmp_path / "nats", sync_always=False)
    nats.start()
    s = Stack(nats.url, upstream_url, tmp_path)
    projector = Service(["projector", "--nats-url", nats.url], tmp_path / "projector.log").start()
    api, url = api_process(nats.url, tmp_path / "api.log")
    s.start_worker()
    client = OpenAI(base_url=f"{url}/v1", api_key="t", max_retries=0, timeout=60)
    try:
        api.wait_http(url, "/readyz")
        conv = client.conversations.create()
        assert (
            client.responses.create(model="m", conversation=conv.id, input="a").status
            == "completed"
        )
        assert nats.process is not None
        nats.process.send_signal(signal.SIGKILL)
        nats.process.wait()
        time.sleep(1)
        nats.start()  # same port, same data
        deadline = time.monotonic() + 30
        while True:
            try:
                r = client.responses.create(model="m", conversation=conv.id, input="b", timeout=10)
                break
            except (openai.APIStatusError, openai.APITimeoutError, openai.APIConnectionError):
                assert time.monotonic() < deadline, "no recovery"
                time.sleep(0.5)
        assert r.status == "completed"
        assert r.output_text == "echo: b (context: 3 messages)"
        bg = client.responses.create(model="m", input="c", background=True)
        assert wait_status(client, bg.id, "completed").status == "completed"
    finally:
        for service in [api, *s.workers, projector]:
            service.stop()
        nats.stop()
