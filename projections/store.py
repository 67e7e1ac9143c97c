"""Where views live: a JetStream KV bucket, or a dict for folds in memory.

Both speak the same small interface, so the reader and the fold are written once.
"""

import asyncio
import json
from typing import Any, Protocol

import nats.errors
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from events.direct import DirectGetUnavailable, TooManySubjects, direct_batch
from events.store import while_unavailable
from projections.apply import Change, Delete, PurgePrefix, Put

BUCKET = "convstore_views"


class ViewStore(Protocol):
    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]: ...

    async def get_matching(self, patterns: list[str]) -> dict[str, dict[str, Any]] | None: ...

    async def write(self, changes: list[Change]) -> None: ...


class MemoryViews:
    """Views in a dict: for point-in-time folds and for comparing with the live ones."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, Any]] = {}

    async def get(self, key: str) -> dict[str, Any] | None:
        return self.data.get(key)

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        return [self.data.get(k) for k in keys]

    async def get_matching(self, patterns: list[str]) -> dict[str, dict[str, Any]] | None:
        return {k: v for k, v in self.data.items() if any(subject_matches(p, k) for p in patterns)}

    async def write(self, changes: list[Change]) -> None:
        for change in changes:
            if isinstance(change, Put):
                self.data[change.key] = change.value
            elif isinstance(change, Delete):
                self.data.pop(change.key, None)
            else:
                for key in [k for k in self.data if k.startswith(change.prefix)]:
                    del self.data[key]


async def open_bucket(
    js: JetStreamContext,
    bucket: str = BUCKET,
    replicas: int = 1,
    history: int = 1,
    ttl: float | None = None,
) -> KeyValue:
    """A KV bucket (by default the views bucket), created when missing; `ttl` is the
    max_age of its values (None: kept forever)."""

    async def open_or_create() -> KeyValue:
        try:
            return await js.key_value(bucket)
        except (BucketNotFoundError, NotFoundError):
            pass
        return await js.create_key_value(
            KeyValueConfig(
                bucket=bucket,
                history=history,
                ttl=ttl,
                storage=StorageType.FILE,
                replicas=replicas,
                direct=True,
            )
        )

    return await while_unavailable(open_or_create)


class KVViews:
    """Views in a JetStream KV bucket. Writes within one call run concurrently."""

    def __init__(
        self, js: JetStreamContext, kv: KeyValue, bucket: str = BUCKET, timeout: float = 5.0
    ) -> None:
        self.js = js
        self.kv = kv
        self.bucket = bucket
        self.timeout = timeout

    async def get(self, key: str) -> dict[str, Any] | None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        return json.loads(entry.value) if entry.value else None

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        """Many keys in one batched direct get per 1,000 (the server answers up to 1,024
        subjects a request): a page costs one round trip, not one per key."""
        if len(keys) < 2:
            return [await self.get(k) for k in keys]
        prefix = f"$KV.{self.bucket}."
        found: dict[str, dict[str, Any] | None] = {}
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            request = {"multi_last": [prefix + k for k in chunk], "batch": len(chunk)}
            try:
                msgs = await direct_batch(self.js._nc, f"KV_{self.bucket}", request, self.timeout)
            except DirectGetUnavailable as exc:
                raise nats.errors.TimeoutError from exc
            for m in msgs:
                live = m.headers.get("KV-Operation") not in ("DEL", "PURGE") and m.data
                found[m.subject.removeprefix(prefix)] = json.loads(m.data) if live else None
        return [found.get(k) for k in keys]

    async def get_matching(self, patterns: list[str]) -> dict[str, dict[str, Any]] | None:
        """Every live key matching the patterns (NATS wildcards), from one point-in-time
        read; None when one request cannot answer them all (over 1024 keys)."""
        prefix = f"$KV.{self.bucket}."
        request = {"multi_last": [prefix + p for p in patterns]}
        try:
            msgs = await direct_batch(self.js._nc, f"KV_{self.bucket}", request, self.timeout)
        except TooManySubjects:
            return None
        except DirectGetUnavailable as exc:
            raise nats.errors.TimeoutError from exc
        if msgs.pending:
            return None
        return {
            m.subject.removeprefix(prefix): json.loads(m.data)
            for m in msgs
            if m.headers.get("KV-Operation") not in ("DEL", "PURGE") and m.data
        }

    async def write(self, changes: list[Change]) -> None:
        """Apply changes that do not depend on each other's order, concurrently."""
        await asyncio.gather(*(self._one(c) for c in changes))

    async def _one(self, change: Change) -> None:
        if isinstance(change, Put):
            await self.kv.put(change.key, json.dumps(change.value, separators=(",", ":")).encode())
        elif isinstance(change, Delete):
            await self.kv.delete(change.key)
        elif isinstance(change, PurgePrefix):
            await self.js.purge_stream(
                f"KV_{self.bucket}", subject=f"$KV.{self.bucket}.{change.prefix}>"
            )


def subject_matches(pattern: str, key: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    want, have = pattern.split("."), key.split(".")
    for n, token in enumerate(want):
        if token == ">":
            return len(have) > n
        if n >= len(have) or (token != "*" and token != have[n]):
            return False
    return len(have) == len(want)
