import asyncio
from pathlib import Path

import httpx
import pytest

from convstore.loop import run_loop
from tests.servers import Service, free_port


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_processes_run_on_uvloop() -> None:
    """uvicorn[standard] installs uvloop here; every convstore process runs on it."""
    assert run_loop(_loop_module()).startswith("uvloop")


@pytest.mark.parametrize("on", [False, True])
def test_the_access_log_is_off_unless_asked_for(nats_url: str, tmp_path: Path, on: bool) -> None:
    port = free_port()
    log = tmp_path / "api.log"
    env = {"CONVSTORE_LOG_LEVEL": "info", **({"CONVSTORE_ACCESS_LOG": "true"} if on else {})}
    api = Service(["api", "--nats-url", nats_url, "--port", str(port)], log, env).start()
    try:
        url = f"http://127.0.0.1:{port}"
        api.wait_http(url)
        assert httpx.get(f"{url}/v1/conversations/conv_missing").status_code in (400, 404)
    finally:
        api.stop()
    assert ("GET /v1/conversations/conv_missing" in log.read_text()) is on
