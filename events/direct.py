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


@dataclass(frozen=True)
class DirectMsg:
    seq: int
    subject: str
    data: bytes
    headers: dict[str, str]


async def direct_batch(
    nc: NATS, stream: str, request: dict[str, Any], timeout: float
) -> list[DirectMsg]:
    """The messages of one batched direct get, until its end-of-batch status."""
    if not nc.is_connected:
        raise DirectGetUnavailable("not connected to NATS")
    out: list[DirectMsg] = []
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def collect(msg: Msg) -> None:
        # A callback, not next_msg(): no task and timer per message of the batch.
        if done.done():
            return
        headers = msg.headers or {}
        status = headers.get("Status")
        if status in ("204", "404"):  # end of batch; nothing found
            done.set_result(None)
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
