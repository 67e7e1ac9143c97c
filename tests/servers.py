"""Real servers for tests: nats-server (binary, or a container when Docker answers) and
convstore processes started the way an operator starts them."""

import contextlib
import hashlib
import json
import os
import signal
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

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log = log
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
