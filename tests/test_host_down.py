"""After the machine went down while the embedded nats-server ran, `convstore serve`
rebuilds the views (stored without fsync, they may have lost writes in any order)."""

import re
import time

import pytest
from openai import OpenAI

from convstore import embedded_nats
from convstore.children import RESTART_DELAY
from convstore.embedded_nats import RUNNING_MARK, EmbeddedNats, boot_id
from tests.servers import Service

pytestmark = pytest.mark.skipif(boot_id() is None, reason="no boot id: not Linux")


def test_the_running_mark_tells_a_machine_that_went_down_from_a_server_crash(tmp_path):
    data = tmp_path / "nats"
    nats = EmbeddedNats(data, sync_always=False)
    nats.start()
    try:
        assert (data / RUNNING_MARK).read_text() == boot_id()
        assert not nats.host_went_down  # no mark before: a first start
        assert nats.process is not None
        nats.process.kill()  # the server crashed; the machine did not
        nats.process.wait()
        nats.start()
        assert not nats.host_went_down
    finally:
        nats.stop()
    assert not (data / RUNNING_MARK).exists()  # a clean stop

    (data / RUNNING_MARK).write_text("a-boot-before-a-power-cut")
    again = EmbeddedNats(data, sync_always=False)
    again.start()
    try:
        assert again.host_went_down
        assert (data / RUNNING_MARK).read_text() == boot_id()
    finally:
        again.stop()


def test_serve_rebuilds_the_views_after_the_machine_went_down(tmp_path):
    data = tmp_path / "data"
    log = tmp_path / "serve.log"

    def serve() -> tuple[Service, str]:
        start = len(log.read_text()) if log.exists() else 0
        service = Service(
            ["serve", "--port", "0", "--data-dir", str(data), "--api-processes", "1"],
            log,
            {"CONVSTORE_LOG_LEVEL": "info"},
        ).start()
        deadline = time.monotonic() + 30
        while not (
            found := re.search(
                r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log.read_text()[start:]
            )
        ):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        service.wait_http(found.group(1), "/readyz")
        return service, found.group(1)

    service, url = serve()
    try:
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        conv = client.conversations.create(items=[{"role": "user", "content": "kept"}])
    finally:
        service.stop()
    assert "rebuilding them from the log" not in log.read_text()

    (data / RUNNING_MARK).write_text("a-boot-before-a-power-cut")
    service, url = serve()
    try:
        deadline = time.monotonic() + 60
        while not re.search(r"rebuilt views from \d+ events", log.read_text()):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        assert "the machine went down while nats-server ran" in log.read_text()
        # A finished rebuild is not started again: wait out twice a restart's delay.
        time.sleep(2 * RESTART_DELAY + 0.5)
        assert "convstore rebuild exited" not in log.read_text()
        assert len(re.findall(r"rebuilt views from \d+ events", log.read_text())) == 1
        client = OpenAI(base_url=f"{url}/v1", api_key="unused")
        items = client.conversations.items.list(conv.id)
        assert [i.content[0].text for i in items.data] == ["kept"]
    finally:
        service.stop()
    assert embedded_nats.RUNNING_MARK not in {p.name for p in data.iterdir()}
