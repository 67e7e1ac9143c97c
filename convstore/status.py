"""`convstore status`: what an operator asks first, from NATS alone. Is the log there, how
far behind are the views, does a projector hold the lease, are model workers running and
is anything waiting for one. Read-only: it creates nothing (a bucket or consumer that is
missing is reported as such).

Exit 0 when nothing is wrong, 1 with the problems listed (no projector, views more than
CONVSTORE_READY_MAX_LAG events behind, requests waiting with no worker running), 2 when
NATS or the log cannot be read.
"""

import argparse
import asyncio
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import PersistMode
from nats.js.errors import NotFoundError

from convstore.settings import Settings
from events.subjects import MODEL_WORKERS, RESPONSE_STREAM_NAME, STREAM_NAME, WORKERS_ALIVE
from projections.active import META_BUCKET, POINTER_KEY
from projections.leader import LEASE_KEY, LEASE_TTL
from projections.store import BUCKET
from projections.views import CHECKPOINT_KEY

if TYPE_CHECKING:
    from convstore.audit import Context

WORKERS_WAIT = 0.5  # seconds to collect the workers' answers


async def gather(nc: NATS, js: JetStreamContext) -> dict[str, Any]:
    """Everything `status` shows, as JSON-able data."""
    log = await js.stream_info(STREAM_NAME)
    out: dict[str, Any] = {
        "nats": {"url": _url(nc), "server_version": _version(nc)},
        "log": {
            "stream": STREAM_NAME,
            "events": log.state.messages,
            "bytes": log.state.bytes,
            "last_seq": log.state.last_seq,
            "replicas": log.config.num_replicas,
        },
    }
    pointer = await _last_kv(js, META_BUCKET, POINTER_KEY)
    bucket = json.loads(pointer[0]).get("bucket", BUCKET) if pointer else BUCKET
    checkpoint = await _last_kv(js, bucket, CHECKPOINT_KEY)
    folded = int(json.loads(checkpoint[0]).get("seq", 0)) if checkpoint else 0
    out["views"] = {
        "bucket": bucket,
        "folded_up_to": folded,
        "lag": max(0, log.state.last_seq - folded),
        "persist": await _persist(js, bucket),
    }
    lease = await _last_kv(js, META_BUCKET, LEASE_KEY)
    out["projector"] = None
    if lease is not None and lease[0]:
        age = (datetime.now(UTC) - lease[1]).total_seconds() if lease[1] else None
        holder = json.loads(lease[0]).get("holder")
        out["projector"] = {"holder": holder, "renewed_s_ago": _round(age)}
    out["workers"] = await _workers(nc)
    out["requests"] = await _requests(js)
    try:
        streams = await js.stream_info(RESPONSE_STREAM_NAME)
        out["response_streams"] = {"events": streams.state.messages, "bytes": streams.state.bytes}
    except NotFoundError:
        out["response_streams"] = None
    return out


async def _persist(js: JetStreamContext, bucket: str) -> str | None:
    """How the views bucket is stored: "async" (`open_views`: not fsynced), "fsync",
    None when it is missing."""
    try:
        config = (await js.stream_info(f"KV_{bucket}")).config
    except NotFoundError:
        return None
    return "async" if config.persist_mode == PersistMode.ASYNC else "fsync"


def problems(status: dict[str, Any], max_lag: int) -> list[str]:
    """What is wrong: no projector (or a stale lease), views more than `max_lag` events
    behind, requests waiting with no worker running."""
    found = []
    projector = status["projector"]
    if projector is None:
        found.append("no projector holds the lease: views are not being written")
    elif projector["renewed_s_ago"] is not None and projector["renewed_s_ago"] > 2 * LEASE_TTL:
        found.append(f"the projector lease was last renewed {projector['renewed_s_ago']} s ago")
    views = status["views"]
    if views["lag"] > max_lag:
        found.append(f"the views trail the log by {views['lag']} events")
    requests = status["requests"]
    waiting = requests["not_yet_delivered"] + requests["redelivered"] if requests else 0
    if not status["workers"] and waiting:
        found.append(f"{waiting} response requests wait and no model worker is running")
    return found


def render(status: dict[str, Any]) -> list[str]:
    log, views, requests = status["log"], status["views"], status["requests"]
    lines = [
        f"nats        {status['nats']['url']} (nats-server {status['nats']['server_version']})",
        f"log         {log['stream']}: {log['events']:,} events, {_mb(log['bytes'])}, last "
        f"position {log['last_seq']:,}, replicas {log['replicas']}",
    ]
    lines.append(
        f"views       {views['bucket']}: folded up to {views['folded_up_to']:,}, "
        f"{views['lag']:,} behind the log"
    )
    if views.get("persist") == "fsync" and log["replicas"] == 1:
        lines.append(
            "            stored with fsync (made by an older version): `convstore rebuild` "
            "replaces it with a bucket that is not fsynced, faster to write and read"
        )
    projector = status["projector"]
    lines.append(
        "projector   none holds the lease"
        if projector is None
        else f"projector   {projector['holder']} (lease renewed {projector['renewed_s_ago']} s ago)"
    )
    workers = status["workers"]
    lines.append(f"workers     {len(workers)} running")
    for w in workers:
        lines.append(f"            {w.get('name')}: {w.get('running')} of {w.get('concurrency')}")
    if requests is None:
        lines.append("requests    no worker consumer yet (no worker ever ran)")
    else:
        lines.append(
            f"requests    {requests['not_yet_delivered']:,} not yet taken, "
            f"{requests['in_progress']:,} being worked on, {requests['redelivered']:,} to retry"
        )
    streams = status["response_streams"]
    if streams is not None:
        lines.append(
            f"streams     {streams['events']:,} streaming events kept, {_mb(streams['bytes'])}"
        )
    return lines


async def run(ctx: "Context", args: argparse.Namespace) -> int:
    status = await gather(ctx.nc, ctx.js)
    found = problems(status, Settings().ready_max_lag)  # the API's /readyz bound
    if args.json:
        print(json.dumps({**status, "problems": found}, indent=2))
    else:
        print("\n".join([*render(status), *(f"PROBLEM     {p}" for p in found)]))
    return 1 if found else 0


async def _requests(js: JetStreamContext) -> dict[str, Any] | None:
    """The model workers' shared consumer: requests not yet taken, held, to retry."""
    try:
        info = await js.consumer_info(STREAM_NAME, MODEL_WORKERS)
    except NotFoundError:
        return None
    return {
        "not_yet_delivered": info.num_pending or 0,
        "in_progress": info.num_ack_pending or 0,
        "redelivered": info.num_redelivered or 0,
    }


async def _last_kv(
    js: JetStreamContext, bucket: str, key: str
) -> tuple[bytes, datetime | None] | None:
    """A KV key's value and when it was written, without creating the bucket."""
    try:
        msg = await js.get_last_msg(f"KV_{bucket}", f"$KV.{bucket}.{key}", direct=True)
    except NotFoundError:
        return None
    if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
        return None
    return msg.data or b"", msg.time


async def _workers(nc: NATS) -> list[dict[str, Any]]:
    """Every running model worker's answer on WORKERS_ALIVE."""
    answers: list[dict[str, Any]] = []

    async def collect(msg: Msg) -> None:
        if (msg.headers or {}).get("Status"):  # "no responders": nobody subscribes
            return
        try:
            answers.append(json.loads(msg.data))
        except ValueError:
            answers.append({"name": msg.data.decode(errors="replace")})

    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox, cb=collect)
    try:
        await nc.publish(WORKERS_ALIVE, b"", reply=inbox)
        await asyncio.sleep(WORKERS_WAIT)
    finally:
        await sub.unsubscribe()
    return sorted(answers, key=lambda a: str(a.get("name")))


def _url(nc: NATS) -> str:
    url = nc.connected_url
    return f"{url.scheme}://{url.hostname}:{url.port}" if url else "?"


def _version(nc: NATS) -> str:
    v = nc.connected_server_version
    return f"{v.major}.{v.minor}.{v.patch}"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
