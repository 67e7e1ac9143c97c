"""`convstore` command: serve (everything), api, projector, worker, rebuild; and the audit commands
(history, tail, export, verify) from convstore/audit.py."""

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn

from api import keys as api_keys
from api import one_write
from api.app import create_app
from api.protocol_errors import JsonErrorsProtocol
from convstore import audit, keys_command
from convstore.children import Child
from convstore.embedded_nats import EmbeddedNats
from convstore.loop import run_loop
from convstore.maintenance import run_purge, run_rebuild
from convstore.settings import Settings
from events.asyncapi import asyncapi_json
from projections.worker import run_projector
from workers.providers.registry import Registry, load_map
from workers.runner import run_model_worker

log = logging.getLogger("convstore")
BACKLOG = 2048  # uvicorn's default


def _api_processes(value: str) -> str:
    """--api-processes: a number >= 1 or `auto` (checked here for a usage error, not a
    validation traceback)."""
    if value == "auto" or (value.isdigit() and int(value) >= 1):
        return value
    raise argparse.ArgumentTypeError("a number >= 1, or auto")


def _fds(value: str) -> tuple[int, ...]:
    return tuple(int(fd) for fd in value.split(","))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convstore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, help: str, http: bool, nats_required: bool) -> None:
        p = sub.add_parser(name, help=help)
        if http:
            p.add_argument("--host", help="listen address (default 127.0.0.1)")
            p.add_argument("--port", type=int, help="listen port (default 8000)")
        if name == "serve":
            p.add_argument("--data-dir", type=Path, help="embedded NATS data (./.convstore)")
            p.add_argument(
                "--api-processes",
                type=_api_processes,
                help="API processes on the port: a number, or auto (one per core, at most 4)",
            )
        if name == "api":
            # serve's extra API processes: accept on serve's listening sockets, inherited
            # at these descriptors, instead of binding --host/--port.
            p.add_argument("--fd", type=_fds, help=argparse.SUPPRESS)
        p.add_argument(
            "--nats-url",
            help="NATS URL(s), comma-separated"
            + ("" if nats_required else "; without it an embedded nats-server is started"),
        )
        p.add_argument("--replicas", type=int, help="stream and KV replicas (default 1)")

    add("serve", "run NATS (embedded unless --nats-url), the projector and the API", True, False)
    add("api", "run the HTTP API against an external NATS", True, True)
    add("projector", "run the projection worker against an external NATS", False, True)
    add("worker", "run a model worker (responses) against an external NATS", False, True)
    add(
        "rebuild",
        "rebuild all views from the log beside the live ones, then switch (no downtime)",
        False,
        True,
    )
    add("purge", "erase a conversation's events and views for good (leaves a record)", False, True)
    sub.choices["purge"].add_argument("conversation_id")
    sub.choices["purge"].add_argument("--reason", help="why (kept in the purge record)")
    sub.add_parser("asyncapi", help="print the AsyncAPI document of the event subjects")
    audit.register(sub)
    keys_command.register(sub)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    skip = ("command", "conversation_id", "reason", "fd")
    flags = {k: v for k, v in vars(args).items() if k not in skip and v is not None}
    return Settings(**flags)


async def _until_signal(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def api_keys_or_exit(settings: Settings, command: str) -> api_keys.KeyRing | None:
    """The configured keys; None (open development mode) only on a loopback address."""
    try:
        keys = api_keys.load(settings.api_keys_file, settings.api_keys)
    except api_keys.KeyConfigError as exc:
        raise SystemExit(f"convstore {command}: {exc}") from None
    if keys is None and not is_loopback(settings.host):
        raise SystemExit(
            f"convstore {command}: refusing to listen on {settings.host!r} without API keys. "
            "With no keys configured convstore runs in open development mode, where every "
            "request acts as tenant 'default' with the admin role, so it listens on loopback "
            "(127.0.0.1, ::1, localhost) only. Configure keys with CONVSTORE_API_KEYS_FILE "
            "(a JSON or TOML keys file) or CONVSTORE_API_KEYS=key:tenant[:role],... (see "
            "the README's Security section; `convstore keys new` makes one), or listen on "
            "127.0.0.1."
        )
    return keys


def listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets for host:port, bound as uvicorn binds them itself (asyncio's
    create_server: one per address `host` resolves to, SO_REUSEADDR, IPv6 only on IPv6
    ones). Bound once by serve, so every API process accepts from the same ones: a taken
    port fails once, and port 0 is one port for all of them."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # the port the first one got
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(
                    exc.errno,
                    f"error while attempting to bind on address {address[:2]!r}: "
                    f"{(exc.strerror or '').lower()}",
                ) from None
            sock.listen(BACKLOG)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def _serve_http(
    settings: Settings,
    urls: list[str],
    stop: asyncio.Event,
    keys: api_keys.KeyRing | None,
    sockets: list[socket.socket] | None = None,
    on_started: Callable[[], None] | None = None,
) -> None:
    """The API until `stop`, then drained; on `sockets` when given (serve's, bound once
    for all its API processes), else on its own socket for settings.host:port.
    `on_started` is called once it serves."""
    app = create_app(
        urls,
        replicas=settings.replicas,
        read_wait_timeout=settings.read_wait_timeout,
        request_timeout=settings.request_timeout,
        ready_max_lag=settings.ready_max_lag,
        keys=keys,
        limits=settings.limits(),
        telemetry=settings.otel,
        queue_timeout=settings.queue_timeout,
    )
    one_write.install()
    config = uvicorn.Config(
        app,
        http=JsonErrorsProtocol,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.access_log,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve(sockets=sockets))
    watch = asyncio.create_task(_when_started(server, on_started)) if on_started else None
    try:
        await asyncio.wait(
            [task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
        )
        server.should_exit = True
        await task
    finally:
        stop.set()
        if watch:
            watch.cancel()


async def _when_started(server: uvicorn.Server, call: Callable[[], None]) -> None:
    """Call `call` once uvicorn serves (it has no hook for that)."""
    while not server.started:
        await asyncio.sleep(0.05)
    call()


async def _model_worker(settings: Settings, urls: list[str], stop: asyncio.Event) -> None:
    registry = Registry(load_map(settings.models), timeout=settings.upstream_timeout)
    await run_model_worker(
        urls,
        stop,
        replicas=settings.replicas,
        registry=registry,
        concurrency=settings.worker_concurrency,
        read_wait_timeout=settings.read_wait_timeout,
        ack_wait=settings.worker_ack_wait,
    )


def _listen_or_exit(settings: Settings) -> list[socket.socket]:
    try:
        sockets = listen(settings.host, settings.port)
    except OSError as exc:
        raise SystemExit(f"convstore serve: {exc}") from None
    port = sockets[0].getsockname()[1]
    log.info(
        "API on http://%s:%d in %d processes",
        f"[{settings.host}]" if ":" in settings.host else settings.host,
        port,
        settings.api_process_count(),
    )
    return sockets


async def serve(
    settings: Settings, stop: asyncio.Event, keys: api_keys.KeyRing | None = None
) -> None:
    """NATS (embedded unless a URL is given), then the projector and a model worker as
    child processes (convstore/children.py), and the API in this one.

    With api_processes > 1 the API runs in that many processes: this one, and children
    (`convstore api --fd`) that inherit the listening sockets bound here, so the kernel
    hands each connection to whichever process accepts it first (an idle one, usually).
    They hold no state of their own: any of them can answer any request."""
    processes = settings.api_process_count()
    sockets = _listen_or_exit(settings) if processes > 1 else None  # before anything starts
    embedded = None
    urls = settings.nats_urls
    if not urls:
        embedded = EmbeddedNats(settings.data_dir, sync_always=settings.sync_always)
        urls = [embedded.start()]
    common = ["--nats-url", ",".join(urls), "--replicas", str(settings.replicas)]
    children = [Child(["projector", *common]), Child(["worker", *common])]
    if embedded and embedded.host_went_down:
        log.warning(
            "the machine went down while nats-server ran: the views, never fsynced, may "
            "have lost writes in any order; rebuilding them from the log (served meanwhile)"
        )
        children.append(Child(["rebuild", *common], once=True))
    apis: list[Child] = []
    if sockets:
        fds = tuple(s.fileno() for s in sockets)
        where = ["--host", settings.host, "--port", str(sockets[0].getsockname()[1])]
        fd_flag = ["--fd", ",".join(map(str, fds))]
        apis = [Child(["api", *common, *where, *fd_flag], fds) for _ in range(processes - 1)]
    # The children stop only once the API has drained: in-flight reads wait for the
    # projector, and in-flight responses for the worker.
    children_stop = asyncio.Event()
    supervised = [asyncio.create_task(c.supervise(children_stop)) for c in children]
    # The further API processes start once this one serves: until then the cores go to
    # this one, the projector and the worker (on a busy machine, six imports at once
    # delayed the projector past the first reads' wait). They all drain at once, on
    # serve's own stop. A child is started (again) only while `stop` is unset: once it
    # is set, uvicorn closes the sockets in this process and their numbers may be reused.
    apis_supervised: list[asyncio.Task[None]] = []

    def start_apis() -> None:
        if not stop.is_set():
            apis_supervised.extend(asyncio.create_task(c.supervise(stop)) for c in apis)

    try:
        try:
            # drains in-flight requests first
            await _serve_http(settings, urls, stop, keys, sockets, start_apis if apis else None)
        finally:
            await asyncio.gather(*apis_supervised, return_exceptions=True)
    finally:
        children_stop.set()
        await asyncio.gather(*supervised, return_exceptions=True)
        for sock in sockets or []:
            sock.close()  # uvicorn has closed them, unless it never started
        if embedded:
            embedded.stop()


def _inherited(fds: tuple[int, ...] | None) -> list[socket.socket] | None:
    """serve's listening sockets, passed to this `convstore api` at these descriptors."""
    return None if fds is None else [socket.socket(fileno=fd) for fd in fds]


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "asyncapi":
        print(asyncapi_json())
        return
    if args.command in audit.COMMANDS:
        raise SystemExit(audit.run(args))
    if args.command == "keys":
        raise SystemExit(keys_command.run(args))
    settings = _settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    keys = api_keys_or_exit(settings, args.command) if args.command in ("serve", "api") else None
    if args.command != "serve" and not settings.nats_urls:
        raise SystemExit(f"convstore {args.command}: --nats-url (or CONVSTORE_NATS_URL) needed")
    runs: dict[str, Callable[[asyncio.Event], Awaitable[Any]]] = {
        "serve": lambda stop: serve(settings, stop, keys),
        "api": lambda stop: _serve_http(
            settings, settings.nats_urls, stop, keys, _inherited(getattr(args, "fd", None))
        ),
        "projector": lambda stop: run_projector(settings.nats_urls, stop, settings.replicas),
        "worker": lambda stop: _model_worker(settings, settings.nats_urls, stop),
        "rebuild": lambda _: run_rebuild(settings),
    }
    if args.command == "purge":
        flags = {k: v for k, v in vars(args).items() if k in ("conversation_id", "reason")}
        raise SystemExit(run_loop(run_purge(settings, **flags)))
    run_loop(_until_signal(runs[args.command]))
