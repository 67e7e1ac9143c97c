"""Runs the workloads for one durability mode (or against --target) and collects figures.

Order within a mode: the raw publish baseline first, on the fresh server; then append,
visibility, list, responses (which measures its own raw flow first) and memory over
HTTP, each starting once the projector has caught up with the previous one; then
rebuild on a bare nats-server of its own (see workloads/rebuild.py). A workload that
fails is recorded with its error and the others still run, so one regression does not
hide every other figure.
"""

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from bench import baseline, profile
from bench.config import Sizes
from bench.context import DEFAULT_MODEL, Context
from bench.procs import MachineBusy
from bench.server import BareNats, ServeProcess
from bench.targets import evaluate
from bench.workloads import append, listing, memory, rebuild, responses, visibility

HTTP_WORKLOADS: dict[str, Callable[[Context], Awaitable[dict[str, Any]]]] = {
    "append": append.run,
    "visibility": visibility.run,
    "list": listing.run,
    "responses": responses.run,
    "memory": memory.run,
}
TARGET_WORKLOADS = ("append", "visibility", "list", "responses")
ALL_WORKLOADS = (*HTTP_WORKLOADS, "rebuild")
MODES = {
    "always": (True, "sync_interval: always (CONVSTORE_SYNC_ALWAYS=true, the default)"),
    "default": (False, "nats-server's default fsync (CONVSTORE_SYNC_ALWAYS=false)"),
}


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Options:
    def __init__(
        self,
        sizes: Sizes,
        procs: int | None,
        workloads: tuple[str, ...],
        workdir: Path | None,
        profile_dir: Path | None,
        code: Path,
        model: str = DEFAULT_MODEL,
    ) -> None:
        self.sizes = sizes
        self.procs = procs
        self.workloads = workloads
        self.workdir = workdir
        self.profile_dir = profile_dir
        self.code = code  # snapshot of the server's sources that serve runs from
        self.model = model  # what the responses workload asks for


@contextlib.contextmanager
def _maybe_profile(options: Options, pid: int, name: str, mode: dict[str, Any]) -> Iterator[None]:
    if options.profile_dir is None:
        yield
        return
    path = options.profile_dir / f"profile-{name}.txt"
    with profile.recording(pid, path):
        yield
    mode.setdefault("profiles", {})[name] = {"file": path.name, **profile.top(path)}


async def _attempt(
    mode: dict[str, Any],
    name: str,
    work: Callable[[], Awaitable[Any]],
    server: ServeProcess | None = None,
) -> None:
    say(f"{mode['name']}: {name} ...")
    start = time.perf_counter()
    busy = MachineBusy().start()
    try:
        result = await work()
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        if server is not None and server.process is not None:
            code = server.process.poll()
            if code is not None:
                error += f" (convstore serve had exited with {code})"
            # The server's data goes away with the run: keep what it said.
            mode.setdefault("server_log_tail", {})[name] = server.log_tail()
        mode["errors"][name] = error
        say(f"{mode['name']}: {name} FAILED: {error}\n{traceback.format_exc()}")
        return
    finally:
        mode["seconds"][name] = round(time.perf_counter() - start, 1)
        mode["machine"][name] = busy.stop()
    if name == "baseline":
        mode["baseline"] = result
    else:
        mode["workloads"][name] = result
    say(f"{mode['name']}: {name} done in {mode['seconds'][name]} s")


def _new_mode(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "baseline": None,
        "workloads": {},
        "seconds": {},
        "machine": {},  # how busy the whole machine was meanwhile (others run tests too)
        "errors": {},
    }


async def run_mode(name: str, options: Options) -> dict[str, Any]:
    sync_always, description = MODES[name]
    mode = _new_mode(name, description)
    mode["sync_always"] = sync_always
    workdir = Path(tempfile.mkdtemp(prefix=f"convstore-bench-{name}-", dir=options.workdir))
    try:
        await _run_mode_in(workdir, mode, options)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    mode["targets"] = [v.as_dict() for v in evaluate(mode)]
    return mode


async def _run_mode_in(workdir: Path, mode: dict[str, Any], options: Options) -> None:
    name, sync_always, sizes = mode["name"], mode["sync_always"], options.sizes
    http = [w for w in HTTP_WORKLOADS if w in options.workloads]
    if http:
        serve = ServeProcess(workdir / "serve", sync_always, options.code)
        server = await asyncio.to_thread(serve.start)
        say(
            f"{name}: convstore serve on {server.base_url} ({server.api_processes} API "
            f"processes), nats {server.nats_url}"
        )
        mode["api_processes"] = server.api_processes
        try:
            ctx = Context(server.base_url, sizes, options.procs, server, options.model)
            if {"append"} & set(http):

                async def raw() -> dict[str, Any]:
                    return await baseline.publish_baseline(
                        server.nats_url,
                        sizes.sequential,
                        sizes.warmup,
                        sizes.in_flight,
                        sizes.seconds,
                        options.procs,
                    )

                await _attempt(mode, "baseline", raw, server)
            for workload in http:

                async def work(w: str = workload) -> dict[str, Any]:
                    with _maybe_profile(options, server.pid, f"{name}-{w}", mode):
                        return await HTTP_WORKLOADS[w](ctx)

                await _attempt(mode, workload, work, server)
        finally:
            await asyncio.to_thread(server.stop)
            server.remove()
    if "rebuild" in options.workloads:
        nats = await asyncio.to_thread(BareNats(workdir / "rebuild", sync_always).start)
        try:

            async def rebuild_work() -> dict[str, Any]:
                with _maybe_profile(options, os.getpid(), f"{name}-rebuild", mode):
                    return await rebuild.run(
                        nats.url, sizes.rebuild_events, {"nats-server": nats.pid}
                    )

            await _attempt(mode, "rebuild", rebuild_work)
        finally:
            await asyncio.to_thread(nats.stop)
            nats.remove()


async def run_target(url: str, options: Options) -> dict[str, Any]:
    """The HTTP workloads against someone else's server: no baseline, rebuild or memory."""
    mode = _new_mode("target", f"--target {url} (HTTP workloads only; no baseline)")
    ctx = Context(url.rstrip("/"), options.sizes, options.procs, None, options.model)
    for workload in (w for w in TARGET_WORKLOADS if w in options.workloads):

        async def work(w: str = workload) -> dict[str, Any]:
            return await HTTP_WORKLOADS[w](ctx)

        await _attempt(mode, workload, work)
    mode["targets"] = [v.as_dict() for v in evaluate(mode)]
    return mode
