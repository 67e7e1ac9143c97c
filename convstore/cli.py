"""`convstore` command: serve (everything), api, projector, rebuild; and the audit commands
(history, tail, export, verify) from convstore/audit.py."""

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn

from api.app import create_app
from convstore import audit
from convstore.embedded_nats import EmbeddedNats
from convstore.maintenance import run_purge, run_rebuild
from convstore.settings import Settings
from events.asyncapi import asyncapi_json
from projections.worker import run_projector

log = logging.getLogger("convstore")


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
            "--nats-url",
            help="NATS URL(s), comma-separated"
            + ("" if nats_required else "; without it an embedded nats-server is started"),
        )
        p.add_argument("--replicas", type=int, help="stream and KV replicas (default 1)")

    add("serve", "run NATS (embedded unless --nats-url), the projector and the API", True, False)
    add("api", "run the HTTP API against an external NATS", True, True)
    add("projector", "run the projection worker against an external NATS", False, True)
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
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    skip = ("command", "conversation_id", "reason")
    flags = {k: v for k, v in vars(args).items() if k not in skip and v is not None}
    return Settings(**flags)


async def _until_signal(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


async def _serve_http(settings: Settings, urls: list[str], stop: asyncio.Event) -> None:
    app = create_app(
        urls,
        replicas=settings.replicas,
        read_wait_timeout=settings.read_wait_timeout,
        request_timeout=settings.request_timeout,
        ready_max_lag=settings.ready_max_lag,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
    )
    server = uvicorn.Server(config)
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    await asyncio.wait(
        [task, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
    )
    server.should_exit = True
    await task
    stop.set()


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    embedded = None
    urls = settings.nats_urls
    if not urls:
        embedded = EmbeddedNats(settings.data_dir, sync_always=settings.sync_always)
        urls = [embedded.start()]
    try:
        # The projector stops only once the API has drained: in-flight reads wait for it.
        projector_stop = asyncio.Event()
        projector = asyncio.create_task(
            run_projector(urls, projector_stop, replicas=settings.replicas)
        )
        try:
            await _serve_http(settings, urls, stop)  # drains in-flight requests first
        finally:
            projector_stop.set()
        await projector
    finally:
        if embedded:
            embedded.stop()


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.command == "asyncapi":
        print(asyncapi_json())
        return
    if args.command in audit.COMMANDS:
        raise SystemExit(audit.run(args))
    settings = _settings(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command != "serve" and not settings.nats_urls:
        raise SystemExit(f"convstore {args.command}: --nats-url (or CONVSTORE_NATS_URL) needed")
    runs: dict[str, Callable[[asyncio.Event], Awaitable[Any]]] = {
        "serve": lambda stop: serve(settings, stop),
        "api": lambda stop: _serve_http(settings, settings.nats_urls, stop),
        "projector": lambda stop: run_projector(settings.nats_urls, stop, settings.replicas),
        "rebuild": lambda _: run_rebuild(settings),
    }
    if args.command == "purge":
        flags = {k: v for k, v in vars(args).items() if k in ("conversation_id", "reason")}
        raise SystemExit(asyncio.run(run_purge(settings, **flags)))
    asyncio.run(_until_signal(runs[args.command]))
