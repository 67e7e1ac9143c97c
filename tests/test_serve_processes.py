"""`convstore serve --api-processes N`: several API processes accepting on one port.

Which process answered is seen from the outside, through /proc: each test holds a raw
connection accepted by each API process (tests/servers.py), so nothing in the API's
responses has to say which process it is.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from pydantic import ValidationError

from convstore.cli import listen, main
from convstore.settings import Settings, usable_cores
from tests.servers import (
    ROOT,
    Service,
    api_pids,
    connection_per_api_process,
    http_exchange,
    read_response,
)

KEY = "sk-procs-0123456789"


def start_serve(
    tmp_path: Path,
    processes: int = 2,
    env: dict[str, str] | None = None,
    own_group: bool = False,
    data_dir: Path | None = None,
):
    """serve on an ephemeral port (--port 0), on `data_dir` (default: tmp_path/data);
    returns it and the port it got."""
    args = ["serve", "--port", "0", "--data-dir", str(data_dir or tmp_path / "data")]
    log = tmp_path / "serve.log"
    service = Service(
        [*args, "--api-processes", str(processes)],
        log,
        {"CONVSTORE_LOG_LEVEL": "info", **(env or {})},
        own_group,
    ).start()
    try:  # a serve that never came up is stopped here, not left running
        deadline = time.monotonic() + 30
        pattern = r"API on http://127\.0\.0\.1:(\d+) in (\d+) processes"
        while not (found := re.search(pattern, _text(log))):
            alive = service.process is not None and service.process.poll() is None
            assert alive, _text(log)[-3000:]
            assert time.monotonic() < deadline, _text(log)[-3000:]
            time.sleep(0.05)
        assert int(found.group(2)) == processes
        port = int(found.group(1))
        service.wait_http(f"http://127.0.0.1:{port}", "/readyz")
    except BaseException:
        service.stop()
        raise
    return service, port


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def running(tmp_path):
    services: list[Service] = []
    yield services
    for service in services:
        service.stop()


def test_two_api_processes_share_the_port_and_the_keys(tmp_path, running):
    service, port = start_serve(tmp_path, env={"CONVSTORE_API_KEYS": f"{KEY}:procs"})
    running.append(service)
    assert service.process is not None
    url = f"http://127.0.0.1:{port}"
    client = OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=30)
    conv = client.conversations.create(metadata={"topic": "processes"})
    client.conversations.items.create(conv.id, items=[{"role": "user", "content": "Hi"}])
    assert [i.content[0].text for i in client.conversations.items.list(conv.id)] == ["Hi"]

    held = connection_per_api_process(port, service.process.pid, expected=2)
    assert len(held) == 2  # serve itself and one `convstore api` child
    for sock in held.values():
        with sock:
            status, _ = http_exchange(sock, "GET", f"/v1/conversations/{conv.id}")
            assert status == 401  # the child got the keys too (from the environment)
            status, body = http_exchange(
                sock,
                "GET",
                f"/v1/conversations/{conv.id}",
                headers=f"Authorization: Bearer {KEY}\r\n",
            )
            assert status == 200 and conv.id.encode() in body
    assert service.stop() == 0


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_killed_api_process_is_started_again(tmp_path, running):
    service, port = start_serve(tmp_path)
    running.append(service)
    assert service.process is not None
    url = f"http://127.0.0.1:{port}"
    # serve starts its API child once its own API serves, which is when start_serve
    # returns: wait until the child takes connections too before killing it.
    for sock in connection_per_api_process(port, service.process.pid, expected=2).values():
        sock.close()
    (child,) = api_pids(service.process.pid)[1:]
    os.kill(child, signal.SIGKILL)
    # Dead before the first request (a zombie until serve reaps it): a connection the child
    # accepted in its last instant would be reset, which is the kill, not the survivor.
    deadline = time.monotonic() + 10
    while _alive(child):
        assert time.monotonic() < deadline, "the API child outlived SIGKILL"
        time.sleep(0.01)
    # Meanwhile serve's own API process answers every new connection.
    statuses = []
    for _ in range(20):
        statuses.append(httpx.post(f"{url}/v1/conversations", json={}, timeout=10).status_code)
        time.sleep(0.05)
    assert statuses == [200] * 20
    deadline = time.monotonic() + 30
    while len(children := api_pids(service.process.pid)[1:]) != 1 or children[0] == child:
        assert time.monotonic() < deadline, f"no new API process: {children}"
        time.sleep(0.1)
    # The new one takes connections again.
    for sock in connection_per_api_process(port, service.process.pid, expected=2).values():
        with sock:
            assert http_exchange(sock, "POST", "/v1/conversations", b"{}")[0] == 200
    assert "convstore api exited with -9; starting it again" in _text(tmp_path / "serve.log")
    assert service.stop() == 0


@pytest.mark.parametrize("signal_to", ["serve", "its process group"])
def test_stop_drains_every_api_process_at_once(tmp_path, running, signal_to):
    """A request in flight on each API process when serve is told to stop: both finish
    (NATS, the projector and the worker are still there), while the port already refuses
    new connections, so both processes stopped accepting at once. SIGINT to serve's
    process group is a Ctrl-C in its terminal: serve's children are not in that group, so
    they too stop in serve's order."""
    service, port = start_serve(tmp_path, own_group=True)
    running.append(service)
    assert service.process is not None
    url = f"http://127.0.0.1:{port}"
    conv = httpx.post(f"{url}/v1/conversations", json={}).json()["id"]
    held = connection_per_api_process(port, service.process.pid, expected=2)
    body = b'{"items": [{"type": "message", "role": "user", "content": "in flight"}]}'
    for sock in held.values():  # headers and half the body: the request is in flight
        sock.sendall(
            f"POST /v1/conversations/{conv}/items HTTP/1.1\r\nHost: test\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body[:20]
        )
    time.sleep(1.0)  # the headers are read: a request is under way on each process
    if signal_to == "serve":
        service.process.send_signal(signal.SIGTERM)
    else:
        os.killpg(service.process.pid, signal.SIGINT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            break
        assert time.monotonic() < deadline, "an API process still accepts after SIGTERM"
        time.sleep(0.1)
    assert service.process.poll() is None  # still draining
    for sock in held.values():
        with sock:
            sock.sendall(body[20:])
            status, answer = read_response(sock)
            assert status == 200, answer
    assert service.process.wait(20) == 0


def test_serve_refuses_a_taken_port_before_starting_anything(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["serve", "--port", str(port), "--api-processes", "2"]
        out = subprocess.run(
            [sys.executable, "-m", "convstore", *args, "--data-dir", str(tmp_path / "data")],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
        )
    assert out.returncode != 0
    assert "address already in use" in out.stderr, out.stderr
    assert not (tmp_path / "data").exists()  # no nats-server, no children


def test_api_processes_setting(monkeypatch, capsys, tmp_path):
    assert Settings().api_processes == "auto"
    assert Settings().api_process_count() == min(usable_cores(), 4)
    monkeypatch.setenv("CONVSTORE_API_PROCESSES", "3")
    assert Settings().api_process_count() == 3
    assert Settings(api_processes="1").api_process_count() == 1  # the --api-processes flag
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv("CONVSTORE_API_PROCESSES", bad)
        with pytest.raises(ValidationError):
            Settings()
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")  # a container with --cpus=1.5
    assert usable_cores(quota) == min(usable_cores(tmp_path / "none"), 2)
    quota.write_text("max 100000\n")
    assert usable_cores(quota) == usable_cores(tmp_path / "none")
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--api-processes", "0"])
    assert exit_.value.code == 2 and "a number >= 1, or auto" in capsys.readouterr().err


def test_listen_binds_every_address_on_one_port():
    """As asyncio's create_server (uvicorn) does: one socket per address of the host,
    and with port 0 the same port on all of them, so every API process is on one port."""
    sockets = listen("", 0)  # all interfaces: 0.0.0.0, and :: where there is IPv6
    try:
        ports = {s.getsockname()[1] for s in sockets}
        assert len(ports) == 1 and len(sockets) == len({s.family for s in sockets}) >= 1
        for sock in sockets:
            if sock.family == socket.AF_INET6:  # IPv6 only, as asyncio binds it
                assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        for sock in sockets:
            sock.close()
