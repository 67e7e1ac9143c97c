"""`convstore serve`'s child processes: the projector, the model worker and the API
processes beyond the first.

In one process they shared the API's event loop (and its one core): every fold and every
model-worker step delayed the requests in flight. As children they use the other cores,
die with serve (Linux: PR_SET_PDEATHSIG), and are started again if they exit on their own.
Each runs in a process group of its own, so a Ctrl-C in the terminal reaches serve alone,
which then stops them in order (the API first, so in-flight requests finish).
"""

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys

from convstore.embedded_nats import die_with_parent

log = logging.getLogger("convstore")
RESTART_DELAY = 1.0


class Child:
    """One `python -m convstore <command>` kept running until `stop`."""

    def __init__(self, args: list[str], pass_fds: tuple[int, ...] = (), once: bool = False) -> None:
        self.args = args
        self.pass_fds = pass_fds  # inherited at the same numbers (the API's listening sockets)
        self.once = once  # a task (a rebuild): done once it exits with 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "convstore", *self.args],
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
            pass_fds=self.pass_fds,
            process_group=0,
        )

    async def supervise(self, stop: asyncio.Event) -> None:
        """Start it, start it again whenever it exits before `stop`, then stop it."""
        try:
            while not stop.is_set():
                self.start()
                assert self.process is not None
                while self.process.poll() is None and not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), 0.5)
                if self.once and self.process.returncode == 0:
                    return
                if not stop.is_set():
                    log.error(
                        "convstore %s exited with %s; starting it again",
                        self.args[0],
                        self.process.returncode,
                    )
                    await asyncio.sleep(RESTART_DELAY)
        finally:
            await asyncio.to_thread(self.terminate)

    def terminate(self, timeout: float = 15.0) -> None:
        stop_process(self.process, timeout)


def stop_process(process: "subprocess.Popen[bytes] | None", timeout: float) -> None:
    """SIGTERM (a clean shutdown), and SIGKILL if it is not over within `timeout`."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
