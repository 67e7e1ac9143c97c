"""Load, faults and checks shared by the reliability tests.

Every write carries a unique token (in metadata or item text), so after a fault the
log can be searched for exactly the writes the API acknowledged.
"""

import asyncio
import contextlib
import json
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from events.connection import connect
from events.store import EventStore
from events.subjects import ALL_EVENTS, STREAM_NAME
from projections.active import current, meta_bucket
from projections.leader import LEASE_KEY
from projections.rebuild import fold_log
from projections.store import MemoryViews
from tests.servers import Service
from tests.test_projector import kv_snapshot, wait_caught_up

MESSAGE = {"type": "message", "role": "user"}


@dataclass
class Write:
    """One HTTP write attempt and what came of it."""

    kind: str  # create | items | metadata
    api: str
    tokens: list[str]  # what the log must hold if the write was acknowledged
    started: float
    elapsed: float = 0.0
    status: int | None = None
    error: str | None = None
    conv_id: str | None = None
    item_ids: list[str] = field(default_factory=list)
    read_status: int | None = None  # read-your-writes check on another replica, if any

    @property
    def acked(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def ended(self) -> float:
        return self.started + self.elapsed

    @property
    def outcome(self) -> str:
        return str(self.status) if self.status is not None else f"error:{self.error}"


class Load:
    """Concurrent writers through the HTTP API, spread over `apis`, every attempt recorded.

    With `ryw`, each acknowledged item write is read back at once from the next API
    replica; the read must not be stale (404), though 503 (views catching up after a
    fault) is allowed and counted.
    """

    def __init__(
        self,
        apis: list[str],
        *,
        workers: int = 16,
        total: int | None = None,
        seed: int = 1,
        ryw: bool = False,
        pause_after_failure: float = 0.1,
    ) -> None:
        self.apis = apis
        self.workers = workers
        self.total = total
        self.rng = random.Random(seed)
        self.ryw = ryw
        self.pause = pause_after_failure
        self.writes: list[Write] = []
        self.convs: list[str] = []
        self.stop = asyncio.Event()
        self._next = 0

    @property
    def acked(self) -> list[Write]:
        return [w for w in self.writes if w.acked]

    def acked_count(self) -> int:
        return sum(1 for w in self.writes if w.acked)

    async def run(self) -> None:
        """Write until `total` attempts were made or `stop` is set."""
        limits = httpx.Limits(max_connections=self.workers * 2)
        async with httpx.AsyncClient(timeout=30, limits=limits) as http:
            await asyncio.gather(*(self._worker(http, n) for n in range(self.workers)))

    async def wait_acked(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.acked_count() < count:
            assert time.monotonic() < deadline, f"only {self.acked_count()} of {count} acked"
            await asyncio.sleep(0.02)

    async def _worker(self, http: httpx.AsyncClient, worker: int) -> None:
        while not self.stop.is_set():
            if self.total is not None and self._next >= self.total:
                return
            n = self._next
            self._next += 1
            write = await self._write(http, n, self.apis[n % len(self.apis)])
            if self.ryw and write.acked and write.item_ids and len(self.apis) > 1:
                other = self.apis[(n + 1) % len(self.apis)]
                with contextlib.suppress(httpx.HTTPError):
                    r = await http.get(
                        f"{other}/v1/conversations/{write.conv_id}/items/{write.item_ids[0]}"
                    )
                    write.read_status = r.status_code
            if not write.acked:
                await asyncio.sleep(self.pause)  # a client backing off, not spinning

    async def _write(self, http: httpx.AsyncClient, n: int, api: str) -> Write:
        token = f"w{n}"
        roll = self.rng.random()
        conv = self.rng.choice(self.convs) if self.convs else None
        if conv is None or roll < 0.1:
            k = self.rng.choice((0, 1, 2))
            items = [{**MESSAGE, "content": f"{token}.{i}"} for i in range(k)]
            write = Write("create", api, [token] + [f"{token}.{i}" for i in range(k)], 0.0)
            path, body = "/v1/conversations", {"metadata": {"t": token}, "items": items}
        elif roll < 0.2:
            write = Write("metadata", api, [token], 0.0, conv_id=conv)
            path, body = f"/v1/conversations/{conv}", {"metadata": {"t": token}}
        else:
            k = self.rng.choice((1, 1, 1, 2, 3))  # mostly one item; 2 or 3 in one atomic batch
            texts = [f"{token}.{i}" for i in range(k)]
            write = Write("items", api, texts, 0.0, conv_id=conv)
            path = f"/v1/conversations/{conv}/items"
            body = {"items": [{**MESSAGE, "content": t} for t in texts]}
        self.writes.append(write)
        write.started = time.monotonic()
        try:
            r = await http.post(api + path, json=body)
            write.status = r.status_code
            if write.acked:
                answer = r.json()
                if write.kind == "create":
                    write.conv_id = answer["id"]
                    self.convs.append(answer["id"])
                elif write.kind == "items":
                    write.item_ids = [i["id"] for i in answer["data"]]
        except httpx.HTTPError as exc:
            write.error = type(exc).__name__
        write.elapsed = time.monotonic() - write.started
        return write


def statuses(writes: list[Write]) -> dict[str, int]:
    return dict(sorted(Counter(w.outcome for w in writes).items()))


async def log_tokens(nats_urls: list[str]) -> tuple[set[str], int]:
    """Every write token in the log, and how many events the log holds."""
    nc = await connect(nats_urls, "reliability-check")
    try:
        js = nc.jetstream(timeout=10)
        store = EventStore(nc, js, timeout=10)
        last = await store.last_seq()
        sub = await js.pull_subscribe(
            ALL_EVENTS,
            stream=STREAM_NAME,
            config=ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL),
        )
        tokens: set[str] = set()
        events = 0
        seq = 0
        try:
            while seq < last:
                for m in await sub.fetch(512, timeout=5):
                    seq = m.metadata.sequence.stream
                    events += 1
                    tokens.update(_tokens(json.loads(m.data)))
        finally:
            await sub.unsubscribe()
        return tokens, events
    finally:
        await nc.close()


def _tokens(event: dict[str, Any]) -> list[str]:
    if event["type"] in ("ConversationCreated", "MetadataReplaced"):
        return [event["metadata"]["t"]] if "t" in event.get("metadata", {}) else []
    if event["type"] == "ItemAdded":
        return [part.get("text", "") for part in event["item"].get("content", [])]
    return []


@dataclass
class Verdict:
    """What an acknowledged-writes check found."""

    acked: int
    in_log: int
    missing: list[str]
    unacked_in_log: int  # e.g. a 503 after a timeout whose write was stored after all
    events: int


async def check_log(nats_urls: list[str], load: Load) -> Verdict:
    tokens, events = await log_tokens(nats_urls)
    acked = load.acked
    missing = [w.tokens[0] for w in acked if not all(t in tokens for t in w.tokens)]
    unacked = sum(1 for w in load.writes if not w.acked and w.tokens[0] in tokens)
    return Verdict(len(acked), len(acked) - len(missing), missing, unacked, events)


def log_figures(log: Verdict, load: Load) -> dict[str, Any]:
    """The figures every reliability test reports on its writes and what the log holds."""
    return {
        "writes_attempted": len(load.writes),
        "acknowledged_2xx": log.acked,
        "found_after_in_log": log.in_log,
        "unacknowledged_found_in_log": log.unacked_in_log,
        "events_in_log": log.events,
        "write_statuses": statuses(load.writes),
    }


async def views_match_rebuild(
    nats_urls: list[str], load: Load, timeout: float = 60
) -> dict[str, Any]:
    """Wait until the live views reach the log's end; then they must equal a fold of the
    whole log, and hold every acknowledged conversation and item."""
    nc = await connect(nats_urls, "reliability-views")
    try:
        js = nc.jetstream(timeout=10)
        store = EventStore(nc, js, timeout=10)
        generation = await current(await meta_bucket(js))
        began = time.monotonic()
        await wait_caught_up(js, store, generation.bucket, timeout=timeout)
        caught_up = time.monotonic() - began
        live = await kv_snapshot(js, generation.bucket)
        rebuilt = MemoryViews()
        await fold_log(store, rebuilt)
        differing = sorted(
            k for k in live.keys() | rebuilt.data.keys() if live.get(k) != rebuilt.data.get(k)
        )
        missing = [
            key
            for w in load.acked
            for key in (
                [f"conv.{w.conv_id}"]
                if w.kind == "create"
                else [f"conv.{w.conv_id}.ref.{i}" for i in w.item_ids]
            )
            if key not in live
        ]
        return {
            "view_keys": len(live),
            "keys_differing_from_rebuild": len(differing),
            "first_differing": differing[:5],
            "acked_missing_from_views": len(missing),
            "caught_up_after_s": round(caught_up, 2),
        }
    finally:
        await nc.close()


async def lease_holder_pid(nats_urls: list[str]) -> int | None:
    """The pid of the projector holding the lease (None when nobody does)."""
    nc = await connect(nats_urls, "reliability-lease")
    try:
        meta = await meta_bucket(nc.jetstream(timeout=5))
        try:
            entry = await meta.get(LEASE_KEY)
        except Exception:
            return None
        return int(json.loads(entry.value or b"{}").get("pid", 0)) or None
    finally:
        await nc.close()


def kill9(service: Service) -> None:
    assert service.process is not None and service.process.poll() is None, "already dead"
    service.process.send_signal(signal.SIGKILL)
    service.process.wait()
