"""Connecting to NATS the same way in every process."""

import asyncio
import logging

import nats
from nats.aio.client import Client as NATS

log = logging.getLogger("convstore.nats")


async def connect(servers: list[str], name: str, timeout: float = 30.0) -> NATS:
    """Connect, retrying for `timeout` while NATS starts; reconnect forever once connected."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await nats.connect(
                servers=servers,
                name=name,
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
            )
        except Exception:
            if loop.time() >= deadline:
                raise
            log.warning("NATS at %s not reachable yet; retrying", servers)
            await asyncio.sleep(0.5)
