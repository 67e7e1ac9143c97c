"""A waited-for response fails when no model worker is alive (CONVSTORE_QUEUE_TIMEOUT),
instead of waiting forever; background ones stay queued; a worker that comes later runs
the queued ones and not the failed ones; one waiting its turn behind a running response
is not failed (api/queue_timeout.py)."""

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from tests.servers import Service, free_port, model_map
from tests.test_responses import FAKE, token, wait_status

TIMEOUT = 1.0  # CONVSTORE_QUEUE_TIMEOUT of these tests' API


def _api(nats_url: str, log: Path) -> tuple[Service, str]:
    port = free_port()
    env = {"CONVSTORE_QUEUE_TIMEOUT": str(TIMEOUT)}
    service = Service(["api", "--nats-url", nats_url, "--port", str(port)], log, env).start()
    url = f"http://127.0.0.1:{port}"
    service.wait_http(url, "/readyz")
    return service, url


def _client(url: str) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.fixture
def no_worker(fresh_nats: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A projector and an API on a log of their own, and no model worker."""
    projector = Service(["projector", "--nats-url", fresh_nats], tmp_path / "projector.log")
    projector.start()
    api, url = _api(fresh_nats, tmp_path / "api.log")
    try:
        yield fresh_nats, url
    finally:
        api.stop()
        projector.stop()


def test_no_worker_fails_sync_and_streamed_responses_and_a_late_worker_skips_them(
    no_worker: tuple[str, str], tmp_path: Path
) -> None:
    nats_url, url = no_worker
    client = _client(url)
    conv = client.conversations.create()
    background = client.responses.create(model="m", input="later", background=True)

    started = time.monotonic()
    failed = client.responses.create(model="m", conversation=conv.id, input="hello?")
    waited = time.monotonic() - started
    assert failed.status == "failed"
    assert failed.error is not None and failed.error.code == "server_error"
    assert "No model worker" in failed.error.message
    assert failed.output == []
    assert TIMEOUT <= waited < 15

    stream = client.responses.create(model="m", input="streamed", stream=True)
    events = list(stream)
    assert [e.type for e in events] == ["response.created", "response.failed"]
    assert [e.sequence_number for e in events] == [0, 1]
    assert events[0].response.status == "queued"
    streamed_id = events[1].response.id
    # The SDK's stream helper refuses a stream that does not open with response.created.
    with client.responses.stream(model="m", input="helper") as helper:
        assert [e.type for e in helper] == ["response.created", "response.failed"]

    # Retrieve and the log agree; the failure is the API's, not a worker's.
    assert client.responses.retrieve(failed.id).status == "failed"
    log = httpx.get(f"{url}/v1/conversations/{conv.id}/events").json()["data"]
    (failure,) = [e for e in log if e["type"] == "ResponseFailed"]
    assert failure["actor"]["kind"] == "system"
    # A background response waits for a worker however long it takes.
    assert client.responses.retrieve(background.id).status == "queued"
    # One cancelled while queued: its stream opens with response.created too.
    cancelled = client.responses.create(model="m", input="never", background=True)
    client.responses.cancel(cancelled.id)
    replay = client.responses.retrieve(cancelled.id, stream=True)
    assert [e.type for e in replay] == ["response.created", "response.cancelled"]

    worker = Service(["worker", "--nats-url", nats_url], tmp_path / "worker.log").start()
    try:
        assert wait_status(client, background.id, "completed").status == "completed"
        after = client.responses.create(model="m", conversation=conv.id, input="now?")
        assert after.status == "completed"
    finally:
        worker.stop()
    assert client.responses.retrieve(failed.id).status == "failed"
    assert client.responses.retrieve(streamed_id).status == "failed"
    items = client.conversations.items.list(conv.id, order="asc").data
    # Only the turn that ran: the failed request's input was never added.
    assert [i.role for i in items] == ["user", "assistant"]
    assert items[0].content[0].text == "now?"
    log = httpx.get(f"{url}/v1/conversations/{conv.id}/events").json()["data"]
    claimed = {e["response_id"] for e in log if e["type"] == "ResponseInProgress"}
    assert claimed == {after.id}


def test_a_response_waiting_its_turn_is_not_failed(
    nats_url: str, api_urls: list[str], tmp_path: Path
) -> None:
    """Workers are alive (the session's): the second response of a conversation waits for
    the first, three times longer than the queue timeout, and then runs."""
    api, url = _api(nats_url, tmp_path / "api.log")
    try:
        client = _client(url)
        conv = client.conversations.create()
        t = token()
        first = client.responses.create(
            model=FAKE, conversation=conv.id, input=f"SLOWSTART {t}", background=True
        )
        started = time.monotonic()
        second = client.responses.create(model=FAKE, conversation=conv.id, input=f"next {t}")
        assert second.status == "completed"
        assert time.monotonic() - started > 2 * TIMEOUT
        assert client.responses.retrieve(first.id).status == "completed"
    finally:
        api.stop()


def test_a_response_whose_worker_died_fails_when_no_other_is_alive(
    no_worker: tuple[str, str], upstream_url: str, tmp_path: Path
) -> None:
    nats_url, url = no_worker
    env = {"CONVSTORE_MODELS": model_map(upstream_url)}
    worker = Service(["worker", "--nats-url", nats_url], tmp_path / "worker.log", env).start()
    try:
        stream = _client(url).responses.create(model=FAKE, input=f"HANG {token()}", stream=True)
        events = iter(stream)
        while next(events).type != "response.in_progress":
            pass
        worker.stop(signal.SIGKILL)
        started = time.monotonic()
        rest = list(events)
    finally:
        worker.stop(signal.SIGKILL)
    assert [e.type for e in rest] == ["response.failed"]
    assert rest[0].response.error is not None
    assert rest[0].response.error.message.startswith("The model worker running this response")
    # Its subscription went with its connection: the next check (1 s) and the recheck.
    assert time.monotonic() - started < 10
