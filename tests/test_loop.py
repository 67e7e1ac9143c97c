import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from convstore.loop import GC_THRESHOLDS, run_loop
from tests.servers import Service, free_port


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_processes_run_on_uvloop() -> None:
    """uvicorn[standard] installs uvloop here; every convstore process runs on it."""
    assert run_loop(_loop_module()).startswith("uvloop")


def _fresh_process(code: str) -> list[str]:
    """What `code` prints, run by a new Python process (as a convstore command starts)."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_processes_collect_garbage_less_often() -> None:
    """run_loop raises the collector's thresholds and freezes what was alive before it
    (in a fresh process, as a convstore command starts)."""
    probe = (
        "import gc\n"
        "from convstore.loop import run_loop\n"
        "async def main(): return (*gc.get_threshold(), gc.get_freeze_count())\n"
        "print(gc.get_threshold() == (700, 10, 10), *run_loop(main()))\n"
    )
    out = _fresh_process(probe)
    assert out[0] == "True"  # Python's defaults before
    assert tuple(map(int, out[1:4])) == GC_THRESHOLDS
    assert int(out[4]) > 10_000  # the imported modules' objects are frozen


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


def test_fastapi_telemetry_is_off_unless_asked_for() -> None:
    """With a tracer provider configured, FastAPI instruments requests only when the API
    is created with telemetry on (CONVSTORE_OTEL); otherwise it does not even check."""
    probe = (
        "from opentelemetry import trace\n"
        "class Configured(trace.NoOpTracerProvider): pass\n"
        "trace.set_tracer_provider(Configured())\n"
        "from api.app import create_app\n"
        "for on in (False, True):\n"
        "    print(create_app(['nats://127.0.0.1:1'], telemetry=on)._native_telemetry.enabled())\n"
    )
    assert _fresh_process(probe) == ["False", "True"]
