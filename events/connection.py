"""Connecting to NATS the same way in every process."""

import asyncio
import contextlib
import logging
import re
from typing import Any

import nats
from nats.aio.client import Client as NATS

log = logging.getLogger("convstore.nats")


async def _report(exc: Exception) -> None:
    """nats-py's default logs a full traceback per failed attempt; a debug line is enough
    (losing and regaining the connection are logged once each, below)."""
    log.debug("NATS: %s", exc or type(exc).__name__)


async def _reconnected() -> None:
    log.warning("NATS connection restored")


_SPACE = re.compile(r"\s")


def parse_header_lines(raw: bytes) -> dict[str, str]:
    """nats-py's `Client._parse_header_lines`, same result, a fraction of the CPU: its
    check for whitespace in a name runs a Python generator over every character, which
    was 40% of the API's CPU on a list page (twenty-odd messages of eight headers each)
    and a large part of a fold's. An ASCII block (every block convstore writes) is split
    as one string. `tests/test_connection.py` holds it to the original."""
    if not raw.isascii():
        return _parse_bytes(raw)
    out: dict[str, str] = {}
    for line in raw.decode("ascii").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip(_BYTES_SPACE)
            # Printable ASCII holds no whitespace but the space: the regex only for the rest.
            if (" " not in key) if key.isprintable() else _SPACE.search(key) is None:
                out[key] = value.strip(_BYTES_SPACE)
    return out


_BYTES_SPACE = " \t\n\r\x0b\x0c"  # what bytes.strip() strips (str.strip() strips more)


def _parse_bytes(raw: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in raw.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        try:
            key = name.strip().decode("ascii")
        except UnicodeDecodeError:
            continue
        if _SPACE.search(key) is None:
            out[key] = value.strip().decode("utf-8", "replace")
    return out


async def connect(servers: list[str], name: str, timeout: float = 30.0) -> NATS:
    """Connect, retrying for at most `timeout` seconds while NATS starts; once connected,
    reconnect forever. (With unlimited reconnects nats-py retries a first connect forever
    too, hence the outer bound.)"""
    client: list[NATS] = []

    async def disconnected() -> None:
        if not (client and (client[0].is_closed or client[0].is_draining)):  # not our close
            log.warning("lost the NATS connection; reconnecting")

    try:
        nc = await asyncio.wait_for(
            nats.connect(
                servers=servers,
                name=name,
                connect_timeout=2,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                error_cb=_report,
                disconnected_cb=disconnected,
                reconnected_cb=_reconnected,
            ),
            timeout,
        )
    except TimeoutError:
        raise ConnectionError(f"NATS at {servers} not reachable within {timeout:.0f}s") from None
    client.append(nc)
    return fast_headers(nc)


def fast_headers(nc: NATS) -> NATS:
    """`nc` parsing headers with `parse_header_lines`. An instance attribute (nats-py
    calls `self._parse_header_lines(raw)`), so only our own connections: the benchmark's
    raw nats-py baseline keeps stock nats-py."""
    nc._parse_header_lines = parse_header_lines  # type: ignore[method-assign]
    return nc


_STATUS_AT = len(b"NATS/1.0")  # a status message's block: `NATS/1.0 100 ...`


def headerless(nc: NATS) -> NATS:
    """`nc` no longer parses the headers of ordinary messages: they arrive with
    `headers=None`. For a connection of its own that reads a log only for its data,
    subject and reply subject (a rebuild): parsing an event's six or seven headers was
    about a third of what reading it cost. Status messages (`NATS/1.0 <code>`: flow
    control, heartbeats, "no messages") keep theirs, which nats-py's consumers act on."""
    parse = nc._process_headers

    async def process_headers(headers: bytes) -> dict[str, str] | None:
        if headers and headers[_STATUS_AT : _STATUS_AT + 1] != b" ":
            return None
        return await parse(headers)

    nc._process_headers = process_headers  # type: ignore[method-assign]
    return nc


async def cancel_for_sure(task: "asyncio.Task[Any]") -> None:
    """Cancel `task` and wait for its end. Cancelled again until it ends: on Python 3.11
    `asyncio.wait_for` (nats-py's requests use it) returns its result instead of raising
    when the cancellation comes as that result arrives, and a loop like the projector's
    then carries on; awaiting it once would wait forever (seen in a rebuild's flip)."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.5)
    with contextlib.suppress(BaseException):
        task.result()
