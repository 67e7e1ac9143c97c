"""`convstore status`: against the session's servers (all well), and against a server of
its own where the projector and the workers are missing (exit 1, saying what is wrong)."""

import asyncio
import json
import time
from pathlib import Path

from openai import OpenAI

from events.connection import connect
from events.store import ensure_stream
from projections.active import meta_bucket
from projections.store import BUCKET, open_bucket
from tests.servers import Service, free_port
from tests.test_cli_audit import convstore


def _status(nats_url: str) -> tuple[int, dict]:
    done = convstore("status", "--nats-url", nats_url, "--json")
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def test_status_of_a_healthy_deployment(nats_url: str, client: OpenAI) -> None:
    client.conversations.create()
    deadline = time.monotonic() + 20
    while True:  # until the projector folded it
        code, status = _status(nats_url)
        views = status["views"]
        if views["folded_up_to"] > 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert code == 0 and status["problems"] == []
    assert status["log"]["stream"] == "CONVSTORE" and status["log"]["last_seq"] > 0
    assert 0 < views["folded_up_to"] <= status["log"]["last_seq"]
    assert views["lag"] == status["log"]["last_seq"] - views["folded_up_to"]
    assert views["persist"] == "async"  # made by open_views: not fsynced
    assert status["projector"]["holder"] and status["projector"]["renewed_s_ago"] < 10
    workers = status["workers"]
    assert len(workers) == 2 and all(w["concurrency"] == 16 for w in workers)
    assert len({w["name"] for w in workers}) == 2
    assert status["requests"] is not None
    text = convstore("status", "--nats-url", nats_url)
    assert text.returncode == 0
    assert "workers     2 running" in text.stdout and "PROBLEM" not in text.stdout
    assert "stored with fsync" not in text.stdout


async def test_status_points_at_rebuild_for_a_fsynced_views_bucket(fresh_nats: str) -> None:
    """A views bucket made by a version before views were `persist_mode: async`."""
    nc = await connect([fresh_nats], "test")
    js = nc.jetstream()
    await ensure_stream(js)
    await meta_bucket(js)  # as every API process and projector makes it
    await open_bucket(js, BUCKET)
    await nc.close()
    code, status = await asyncio.to_thread(_status, fresh_nats)
    assert code == 1  # no projector
    assert status["views"]["persist"] == "fsync"
    text = await asyncio.to_thread(convstore, "status", "--nats-url", fresh_nats)
    assert "stored with fsync (made by an older version): `convstore rebuild`" in text.stdout


def test_status_says_what_is_missing(fresh_nats: str, tmp_path: Path) -> None:
    assert convstore("status", "--nats-url", fresh_nats).returncode == 2  # no log yet
    port = free_port()
    api = Service(["api", "--nats-url", fresh_nats, "--port", str(port)], tmp_path / "api.log")
    api.start()
    try:
        url = f"http://127.0.0.1:{port}"
        api.wait_http(url)
        client = OpenAI(base_url=f"{url}/v1", api_key="any", max_retries=0)
        client.conversations.create()
        code, status = _status(fresh_nats)
        assert code == 1 and status["projector"] is None and status["workers"] == []
        assert status["requests"] is None  # no worker ever ran
        assert any("no projector" in p for p in status["problems"])

        worker = Service(["worker", "--nats-url", fresh_nats], tmp_path / "worker.log").start()
        deadline = time.monotonic() + 20
        while not _status(fresh_nats)[1]["workers"] and time.monotonic() < deadline:
            time.sleep(0.2)
        worker.stop()
        client.responses.create(model="m", input="anyone?", background=True)
        code, status = _status(fresh_nats)
        assert code == 1 and status["requests"]["not_yet_delivered"] == 1
        assert any("no model worker is running" in p for p in status["problems"])
    finally:
        api.stop()
