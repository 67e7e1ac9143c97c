"""Connecting to NATS the same way in every process."""

import asyncio
import logging

import nats
from nats.aio.client import Client as NATS

log = logging.getLogger("convstore.nats")


async def _report(exc: Exception) -> None:
    """nats-py's default logs a full traceback per failed attempt; a debug line is enough
    (losing and regaining the connection are logged once each, below)."""
    log.debug("NATS: %s", exc or type(exc).__name__)


async def _disconnected() -> None:
    log.warning("lost the NATS connection; reconnecting")


async def _reconnected() -> None:
    log.warning("NATS connection restored")


async def connect(servers: list[str], name: str, timeout: float = 30.0) -> NATS:
    """Connect, retrying for at most `timeout` seconds while NATS starts; once connected,
    reconnect forever. (With unlimited reconnects nats-py retries a first connect forever
    too, hence the outer bound.)"""
    try:
        return await asyncio.wait_for(
            nats.connect(
                servers=servers,
                name=name,
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=_report,
                disconnected_cb=_disconnected,
                reconnected_cb=_reconnected,
            ),
            timeout,
        )
    except TimeoutError:
        raise ConnectionError(f"NATS at {servers} not reachable within {timeout:.0f}s") from None
