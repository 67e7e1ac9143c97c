"""JetStream batched direct get: many messages in one request (nats-server 2.11+).

One request answers a whole page of the log, or the newest message of up to 1024
subjects (`multi_last`), e.g. twenty KV keys: one round trip instead of one per key.
"""

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg


class DirectGetUnavailable(Exception):
    """NATS is unreachable, or the batch did not arrive in time."""


class TooManySubjects(Exception):
    """A multi_last request matched more subjects than one request may (1024)."""


@dataclass(frozen=True)
class DirectMsg:
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]


class Batch(list[DirectMsg]):
    """The messages of one batched direct get; `pending`: how many more matched (the
    end-of-batch status's Nats-Num-Pending), 0 when the batch holds them all."""

    pending: int = 0


async def direct_batch(nc: NATS, stream: str, request: dict[str, Any], timeout: float) -> Batch:
    """The messages of one batched direct get, until its end-of-batch status. A
    multi_last request is one point-in-time read of all its subjects (ADR-31)."""
    if not nc.is_connected:
        raise DirectGetUnavailable("not connected to NATS")
    out = Batch()
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def collect(msg: Msg) -> None:
        # A callback, not next_msg(): no task and timer per message of the batch.
        if done.done():
            return
        headers = msg.headers or {}
        status = headers.get("Status")
        if status in ("204", "404"):  # end of batch; nothing found
            out.pending = int(headers.get("Nats-Num-Pending") or 0)
            done.set_result(None)
        elif status == "413":
            done.set_exception(TooManySubjects(headers.get("Description", "")))
        elif status:
            done.set_exception(
                DirectGetUnavailable(
                    f"direct get answered {status} {headers.get('Description', '')}"
                )
            )
        else:
            out.append(
                DirectMsg(int(headers["Nats-Sequence"]), headers["Nats-Subject"], msg.data, headers)
            )

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), reply=inbox)
        await asyncio.wait_for(done, timeout)
        return out
    except TimeoutError as exc:
        raise DirectGetUnavailable("direct get timed out") from exc
    finally:
        await sub.unsubscribe()
