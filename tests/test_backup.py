"""Backup and restore of the embedded server (README, "Backup and restore"): the data dir
of a stopped `convstore serve` is everything, and of it only the log's stream is needed
(the views are folded again from it); a copy, served from elsewhere, answers exactly as
the original did and takes new writes after the copied ones."""

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI

from convstore.embedded_nats import embedded_url
from tests.servers import ROOT
from tests.test_serve_processes import start_serve


def _client(port: int) -> OpenAI:
    return OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0, timeout=30)


def _state(port: int, conv: str, gone: str, responses: list[str]) -> dict[str, Any]:
    """Everything a client or an auditor reads of what was written, as JSON."""
    base = f"http://127.0.0.1:{port}/v1"
    with httpx.Client(base_url=base, timeout=30) as http:
        return {
            "conversation": http.get(f"/conversations/{conv}").json(),
            "items": http.get(f"/conversations/{conv}/items", params={"limit": 100}).json(),
            "events": http.get(f"/conversations/{conv}/events", params={"limit": 100}).json(),
            "gone": http.get(f"/conversations/{gone}").status_code,
            "gone_events": http.get(f"/conversations/{gone}/events").json(),
            "as_of": http.get(f"/conversations/{conv}/items", params={"as_of": 3}).json(),
            "responses": [http.get(f"/responses/{r}").json() for r in responses],
            "inputs": [http.get(f"/responses/{r}/input_items").json() for r in responses],
        }


STREAMS = Path("jetstream", "jetstream", "$G", "streams")


def _copy(data: Path, copy: Path, what: str) -> None:
    if what == "data_dir":
        shutil.copytree(data, copy)
    else:  # what a `nats stream backup CONVSTORE` restored into an empty server holds
        shutil.copytree(data / STREAMS / "CONVSTORE", copy / STREAMS / "CONVSTORE")


@pytest.mark.parametrize("what", ["data_dir", "log_stream_only"])
def test_a_copy_of_a_stopped_servers_data_serves_the_same_log(tmp_path: Path, what: str) -> None:
    service, port = start_serve(tmp_path)
    try:
        client = _client(port)
        conv = client.conversations.create(
            metadata={"k": "v"}, items=[{"role": "user", "content": "one"}]
        ).id
        added = client.conversations.items.create(
            conv, items=[{"role": "user", "content": "two"}, {"role": "user", "content": "x"}]
        )
        client.conversations.items.delete(added.data[1].id, conversation_id=conv)
        client.conversations.update(conv, metadata={"k": "w"})
        on_conv = client.responses.create(model="m", conversation=conv, input="three").id
        alone = client.responses.create(model="m", input="four").id
        gone = client.conversations.create().id
        client.conversations.delete(gone)
        before = _state(port, conv, gone, [on_conv, alone])
    finally:
        assert service.stop() == 0

    copy = tmp_path / "elsewhere" / "copy"
    _copy(tmp_path / "data", copy, what)
    shutil.rmtree(tmp_path / "data")  # the copy must not lean on the original
    (tmp_path / "restored").mkdir()  # its own serve.log: the port is read from it
    service, port = start_serve(tmp_path / "restored", data_dir=copy)
    try:
        assert _state(port, conv, gone, [on_conv, alone]) == before
        assert before["items"]["data"] and before["responses"][0]["status"] == "completed"
        verify = subprocess.run(
            [sys.executable, "-m", "convstore", "verify", "--nats-url", str(embedded_url(copy))],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        client = _client(port)
        client.conversations.items.create(conv, items=[{"role": "user", "content": "five"}])
        events = httpx.get(
            f"http://127.0.0.1:{port}/v1/conversations/{conv}/events", params={"limit": 100}
        ).json()["data"]
        last_before = before["events"]["data"][-1]["seq"]
        assert max(e["seq"] for e in events) > last_before  # the log goes on after the copy
    finally:
        assert service.stop() == 0
