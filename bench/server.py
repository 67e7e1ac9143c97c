"""Start and stop what the benchmark measures: `convstore serve` (embedded nats-server,
projector, model worker and API processes, as `make run` starts it) and, for the rebuild
workload, a bare nats-server with the same configuration and no projector.

The serve process is started with `python -m convstore serve` exactly as an operator
would, with CONVSTORE_SYNC_ALWAYS set for the durability mode. Its nats-server URL is
read back from `<data-dir>/nats-server.conf`, so the raw baseline talks to the very same
server as the workload.
"""

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil

from convstore.children import stop_process
from convstore.embedded_nats import EmbeddedNats, free_port, nats_server_binary
from convstore.loop import run_loop

ROOT = Path(__file__).resolve().parent.parent
SERVER_PACKAGES = ("api", "convstore", "events", "projections", "workers")


def code_fingerprint(root: Path = ROOT) -> str:
    """sha256 over the server's Python sources: which code a figure was measured on."""
    digest = hashlib.sha256()
    for package in SERVER_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def snapshot_code(dest: Path) -> str:
    """Copy the server's sources as they are now into `dest`; returns their fingerprint.

    Other people edit the tree while a run takes minutes: serve processes started from
    the snapshot all run the same code, the code the run started with.
    """
    for package in SERVER_PACKAGES:
        shutil.copytree(
            ROOT / package,
            dest / package,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            dirs_exist_ok=True,
        )
    return code_fingerprint(dest)


def nats_server_version() -> str:
    try:
        out = subprocess.run(
            [nats_server_binary(), "--version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"
    return out.stdout.strip() or out.stderr.strip()


class ServeProcess:
    """`convstore serve` on a free port with its own data directory."""

    def __init__(self, data_dir: Path, sync_always: bool, code: Path = ROOT) -> None:
        self.data_dir = data_dir
        self.sync_always = sync_always
        self.code = code  # where `python -m convstore` imports the server from
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "serve.log"
        self.api_processes = 0  # how many serve runs, once started

    @property
    def base_url(self) -> str:
        """The API root the HTTP workloads use (the same shape as --target)."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> "ServeProcess":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "CONVSTORE_SYNC_ALWAYS": "true" if self.sync_always else "false",
            "CONVSTORE_LOG_LEVEL": "warning",
            # No model map: every model is answered by the echo test provider, so the
            # responses workload measures the store, never an upstream from the caller's env.
            "CONVSTORE_MODELS": "",
        }
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "convstore",
                    "serve",
                    "--data-dir",
                    str(self.data_dir),
                    "--port",
                    str(self.port),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.code,  # `-m` puts the cwd first on sys.path
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"convstore serve exited: {self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.root_url + "/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError(f"convstore serve not ready in {timeout}s: {self.log_tail()}")
        try:
            self.api_processes = self.wait_api_processes(deadline - time.monotonic())
        except RuntimeError:
            self.stop()
            raise
        return self

    def api_pids(self) -> list[int]:
        """The processes that accept on serve's port: serve, and its `convstore api`
        children (CONVSTORE_API_PROCESSES, default one per core up to 4)."""
        children = []
        for child in psutil.Process(self.pid).children():
            with contextlib.suppress(psutil.Error):
                if "api" in child.cmdline():
                    children.append(int(child.pid))
        return [self.pid, *sorted(children)]

    def wait_api_processes(self, timeout: float) -> int:
        """Wait until every API process answers (serve's /readyz answers once one does):
        open connections until each has accepted one. Without this the first workload
        would run while the others still import. Returns how many there are."""
        deadline = time.monotonic() + timeout
        with contextlib.ExitStack() as stack:
            while True:
                pids = self.api_pids()
                served = self._accepted(pids)
                if all(served.values()):
                    return len(pids)
                assert self.process is not None
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(
                        f"convstore serve: API processes {served} did not all answer in "
                        f"{timeout:.0f}s: {self.log_tail()}"
                    )
                for _ in range(8):  # kept open, so each one counts for the process it reached
                    client = stack.enter_context(httpx.Client(base_url=self.root_url))
                    with contextlib.suppress(httpx.HTTPError):
                        client.get("/readyz", timeout=2)
                time.sleep(0.1)

    def _accepted(self, pids: list[int]) -> dict[int, bool]:
        """Whether each process holds an established connection on serve's port."""
        out = {}
        for pid in pids:
            try:
                conns = psutil.Process(pid).net_connections(kind="tcp")
            except psutil.Error:
                conns = []
            out[pid] = any(
                c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == self.port
                for c in conns
            )
        return out

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def nats_url(self) -> str:
        """The embedded nats-server the serve process started (from its config file)."""
        conf = (self.data_dir / "nats-server.conf").read_text()
        match = re.search(r"^listen:\s*(\S+)", conf, re.MULTILINE)
        if not match:
            raise RuntimeError(f"no listen address in {self.data_dir / 'nats-server.conf'}")
        return f"nats://{match.group(1)}"

    @property
    def nats_pid(self) -> int:
        for child in psutil.Process(self.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if "nats-server" in child.name():
                    return int(child.pid)
        raise RuntimeError("the serve process has no nats-server child")

    def pids(self) -> dict[str, int]:
        """serve (an API process), its nats-server, and the projector, model worker and
        further API processes (api2, api3, ...) it runs as child processes."""
        out = {"serve": self.pid, "nats-server": self.nats_pid}
        for child in psutil.Process(self.pid).children():
            with contextlib.suppress(psutil.Error):
                cmd = child.cmdline()
                for role in ("projector", "worker"):
                    if role in cmd:
                        out[role] = int(child.pid)
        for n, pid in enumerate(self.api_pids()[1:], start=2):
            out[f"api{n}"] = pid
        return out

    def readiness(self) -> dict[str, Any]:
        """/readyz's checks (answered with 503 too while the projection lags)."""
        response = httpx.get(self.root_url + "/readyz", timeout=10)
        return dict(response.json().get("checks", {}))

    def wait_caught_up(self, timeout: float) -> float:
        """Wait until the projector has applied the whole log; returns seconds waited.

        Workloads run one after another on one server: without this, a backlog left by
        one (the projector folds slower than the API appends) would be measured by the next.
        """
        start = time.monotonic()
        while True:
            lag = self.readiness().get("projection_lag")
            if lag == 0:
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"projection still {lag} events behind after {timeout}s")
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> None:
        stop_process(self.process, timeout)

    def remove(self) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)


class BareNats:
    """A nats-server configured like serve's embedded one, with nothing else attached.

    The rebuild workload fills a log of N events directly; a live projector would fold
    them meanwhile and compete for the CPU the rebuild is measured on.
    """

    def __init__(self, data_dir: Path, sync_always: bool) -> None:
        self.server = EmbeddedNats(data_dir, sync_always=sync_always)

    def start(self) -> "BareNats":
        self.server.start()
        return self

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def pid(self) -> int:
        assert self.server.process is not None
        return self.server.process.pid

    def stop(self) -> None:
        self.server.stop()

    def remove(self) -> None:
        shutil.rmtree(self.server.data_dir, ignore_errors=True)


T = TypeVar("T")


def on_own_server(measure: Callable[[str], Coroutine[Any, Any, T]], sync_always: bool) -> T:
    """Run `measure(url)` on uvloop (as convstore's processes run) against a nats-server
    of its own in a temporary directory, removed afterwards: the probes' setting."""
    with tempfile.TemporaryDirectory() as data:
        server = EmbeddedNats(Path(data), sync_always=sync_always)
        url = server.start()
        try:
            return run_loop(measure(url))
        finally:
            server.stop()
