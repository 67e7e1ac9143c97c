"""Real servers for tests: nats-server (binary, or a container when Docker answers) and
convstore processes started the way an operator starts them."""

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from convstore.embedded_nats import EmbeddedNats, free_port

ROOT = Path(__file__).resolve().parent.parent


def docker_answers() -> bool:
    """True only when a Docker engine really responds (not just a docker client)."""
    if os.environ.get("CONVSTORE_TEST_NO_DOCKER"):
        return False
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def nats_server(data_dir: Path) -> Iterator[str]:
    """A JetStream-enabled nats-server; yields its URL."""
    if docker_answers():
        from testcontainers.community.nats import NatsContainer

        container = NatsContainer("nats:2.12-alpine", jetstream=True)
        container.with_command("-js -mp 8388608")
        with container:
            yield container.nats_uri()
        return
    server = EmbeddedNats(data_dir, sync_always=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


class Service:
    """A `convstore` subcommand as a child process, with its output in a log file."""

    def __init__(
        self,
        args: list[str],
        log: Path,
        env: dict[str, str] | None = None,
        own_group: bool = False,  # a process group of its own, as a shell job gets
    ) -> None:
        self.args = args
        self.log = log
        self.own_group = own_group
        # Keys only from `env`: a developer's own CONVSTORE_API_KEYS must not turn the
        # open-mode test servers into secured ones.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("CONVSTORE_API_")}
        self.env = {**inherited, "CONVSTORE_LOG_LEVEL": "warning", **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "Service":
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "convstore", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=self.env,
                process_group=0 if self.own_group else None,
            )
        return self

    def wait_http(self, base_url: str, path: str = "/healthz", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.args} exited: {self.log.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base_url + path, timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.args} not ready: {self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise


def api_process(nats_url: str, log: Path) -> tuple[Service, str]:
    port = free_port()
    service = Service(["api", "--nats-url", nats_url, "--port", str(port)], log).start()
    return service, f"http://127.0.0.1:{port}"


def model_map(upstream_url: str) -> str:
    """CONVSTORE_MODELS for tests: `fake-*` to the fake upstream, the rest to echo."""
    return json.dumps({"fake-*": {"base_url": upstream_url}, "*": {"provider": "echo"}})


# Keys of the secured API replica (conftest `secure_url`): some in the keys file as
# plaintext, some only as their sha256, one more through CONVSTORE_API_KEYS.
SECURE_KEYS: dict[str, dict[str, Any]] = {
    "alice": {"key": "sk-test-alice-0123456789", "tenant": "acme", "name": "alice"},
    "alice2": {"key": "sk-test-alice2-0123456789", "tenant": "acme", "hashed": True},
    "bob": {"key": "sk-test-bob-0123456789", "tenant": "globex", "name": "bob"},
    "root": {"key": "sk-test-root-0123456789", "tenant": "ops", "role": "admin"},
    "slow": {"key": "sk-test-slow-0123456789", "tenant": "slow", "rps": 0.5, "burst": 2},
    "fuzz": {"key": "sk-test-fuzz-0123456789", "tenant": "fuzz", "name": "fuzz"},
    "idem": {"key": "sk-test-idem-0123456789", "tenant": "idem", "hashed": True},
}
ENV_KEY = ("sk-test-env-0123456789", "envtenant", "user")
SECURE_LIMITS = {"CONVSTORE_MAX_BODY_BYTES": "65536", "CONVSTORE_MAX_TEXT_CHARS": "4096"}


def write_keys_file(path: Path) -> Path:
    entries = []
    for spec in SECURE_KEYS.values():
        entry = {k: v for k, v in spec.items() if k not in ("key", "hashed")}
        entry.setdefault("role", "user")
        if spec.get("hashed"):
            entry["sha256"] = hashlib.sha256(spec["key"].encode()).hexdigest()
        else:
            entry["key"] = spec["key"]
        entries.append(entry)
    path.write_text(json.dumps({"keys": entries}))
    return path


def secure_api_process(nats_url: str, tmp: Path) -> tuple[Service, str]:
    port = free_port()
    env = {
        "CONVSTORE_API_KEYS_FILE": str(write_keys_file(tmp / "keys.json")),
        "CONVSTORE_API_KEYS": ":".join(ENV_KEY),
        **SECURE_LIMITS,
    }
    args = ["api", "--nats-url", nats_url, "--port", str(port)]
    return Service(args, tmp / "api.log", env).start(), f"http://127.0.0.1:{port}"


# `convstore serve` with several API processes, observed from the outside through /proc
# (Linux): which processes are its API processes, and which one holds a connection.


def child_pids(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(stat[1]) == pid and stat[0] != "Z":
            out.append(int(entry.name))
    return sorted(out)


def api_pids(serve_pid: int) -> list[int]:
    """serve (it runs an API itself) and its `convstore api` children."""
    children = []
    for pid in child_pids(serve_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"api" in argv:
            children.append(pid)
    return [serve_pid, *children]


def _server_side_inode(port: int, client_port: int) -> str | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                local, remote = cols[1].rsplit(":", 1)[1], cols[2].rsplit(":", 1)[1]
                if int(local, 16) == port and int(remote, 16) == client_port:
                    return cols[9]
    return None


def connection_owner(port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of `pids` accepted the connection from 127.0.0.1:`client_port`."""
    inode = _server_side_inode(port, client_port)
    if inode is None:
        return None
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == f"socket:[{inode}]":
                        return pid
    return None


def http_exchange(
    sock: socket.socket, method: str, path: str, body: bytes = b"", headers: str = ""
) -> tuple[int, bytes]:
    """One HTTP/1.1 request on a raw keep-alive connection (httpx hides which connection
    a request goes over); returns the status and the body."""
    sock.sendall(
        f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n"
        f"Content-Type: application/json\r\n{headers}\r\n".encode()
        + body
    )
    return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(lines[0].split()[1]), rest


def connection_per_api_process(
    port: int, serve_pid: int, expected: int, timeout: float = 30.0
) -> dict[int, socket.socket]:
    """A raw keep-alive connection accepted by each of serve's `expected` API processes.

    The kernel hands a connection to whichever process accepts first, so connections are
    opened in concurrent batches until each process has taken one (a process that is
    still starting takes none); the others are closed. Each held one is used again on
    every round, so none reaches uvicorn's 5 s keep-alive timeout before it is returned."""
    deadline = time.monotonic() + timeout
    held: dict[int, socket.socket] = {}
    while True:
        for pid, sock in list(held.items()):
            try:
                http_exchange(sock, "GET", "/healthz")
            except OSError:
                held.pop(pid).close()
        pids = api_pids(serve_pid)
        if len(pids) == expected and set(pids) <= set(held):
            for pid in set(held) - set(pids):
                held.pop(pid).close()
            return held
        if time.monotonic() > deadline:
            for sock in held.values():
                sock.close()
            raise AssertionError(f"connections held by API processes {list(held)} of {pids}")
        batch = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(8)]
        for sock in batch:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
        for sock in batch:
            with contextlib.suppress(OSError):
                read_response(sock)
            owner = connection_owner(port, sock.getsockname()[1], pids)
            if owner is not None and owner not in held:
                held[owner] = sock
            else:
                sock.close()
        time.sleep(0.05)
