"""Which views bucket is live: a pointer that `rebuild` flips while everything runs.

The pointer (KV `convstore_meta`, key `views`) names the bucket readers use and the
durable consumer projectors fold into it from. Readers and projectors poll it; a
reader that still reads the old bucket after a flip is harmless, because reads wait
until the views reach the conversation's head, and the old bucket stops short of it.
Until the projector notices the flip the old bucket still moves on, though, so a
request keeps reading the bucket its wait was satisfied in (`pin`): otherwise it
could see the conversation in the old bucket and then miss its item in the new one.
"""

import asyncio
import json
import logging
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from events.connection import cancel_for_sure
from events.store import while_unavailable
from projections.store import BUCKET, KVViews, open_bucket, open_views

log = logging.getLogger("convstore.views")

META_BUCKET = "convstore_meta"
POINTER_KEY = "views"
DEFAULT_DURABLE = "projector"
POLL = 1.0


@dataclass(frozen=True)
class Generation:
    bucket: str = BUCKET
    durable: str = DEFAULT_DURABLE


async def meta_bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    return await open_bucket(js, META_BUCKET, replicas, history=5)


async def current(meta: KeyValue) -> Generation:
    try:
        entry = await meta.get(POINTER_KEY)
    except KeyNotFoundError:
        return Generation()
    return Generation(**json.loads(entry.value or b"{}"))


async def flip(meta: KeyValue, generation: Generation) -> None:
    await meta.put(POINTER_KEY, json.dumps(asdict(generation)).encode())


# (the ActiveViews, the bucket) a request has pinned; per task, so per request
_pinned: ContextVar[tuple["ActiveViews", KVViews] | None] = ContextVar("views_pin", default=None)


class ActiveViews:
    """A read-only ViewStore that follows the pointer to the live bucket."""

    def __init__(self, js: JetStreamContext, replicas: int = 1, poll: float = POLL) -> None:
        self.js = js
        self.replicas = replicas
        self.poll = poll
        self.generation = Generation()
        self._views: KVViews | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._meta = await meta_bucket(self.js, self.replicas)
        # On a cluster, a bucket just created answers once its replicas elected a leader.
        await while_unavailable(self._refresh)
        self._task = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        if self._task:
            await cancel_for_sure(self._task)

    async def _refresh(self) -> None:
        generation = await current(self._meta)
        if self._views is None or generation != self.generation:
            kv = await open_views(self.js, generation.bucket, self.replicas)
            self._views = KVViews(self.js, kv, generation.bucket)
            if generation != self.generation:
                log.info("reading views from %s", generation.bucket)
            self.generation = generation

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            try:
                await self._refresh()
            except Exception as exc:  # NATS away: keep the last known bucket
                log.debug("views pointer not refreshed: %s", exc)

    def pin(self) -> None:
        """Read the live bucket for the rest of the current task (a request), even if the
        pointer flips meanwhile; called again, it moves the pin to the live bucket."""
        _pinned.set((self, self._current()))

    def _current(self) -> KVViews:
        assert self._views is not None, "ActiveViews.start() first"
        return self._views

    @property
    def views(self) -> KVViews:
        pinned = _pinned.get()
        return pinned[1] if pinned is not None and pinned[0] is self else self._current()

    async def get(self, key: str) -> dict[str, Any] | None:
        return await self.views.get(key)

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        return await self.views.get_many(keys)

    async def get_matching(self, patterns: list[str]) -> dict[str, dict[str, Any]] | None:
        return await self.views.get_matching(patterns)

    async def write(self, changes: list[Any]) -> None:
        raise TypeError("ActiveViews is read-only; the projector writes views")
