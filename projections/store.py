"""Where views live: a JetStream KV bucket, or a dict for folds in memory.

Both speak the same small interface, so the reader and the fold are written once.
"""

import asyncio
from typing import Any, Protocol

import nats.errors
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import (
    DiscardPolicy,
    KeyValueConfig,
    PersistMode,
    StorageType,
    StreamConfig,
)
from nats.js.errors import (
    APIError,
    BucketNotFoundError,
    NotFoundError,
)
from nats.js.kv import KeyValue

from events import codec
from events.direct import (
    DirectGetUnavailable,
    DirectMsg,
    TooManySubjects,
    direct_batch,
    direct_get,
    direct_last,
    publish_acked,
    replies,
)
from events.ids import new_id
from events.store import MAX_BATCH, WRONG_LAST_SEQUENCE, while_unavailable
from projections.apply import Change, Delete, PurgePrefix, Put

BUCKET = "convstore_views"
# Whether this nats-py has the internals `send_batch_messages` writes protocol bytes with.
# Writes of up to this many keys are pipelined publishes (KVViews._pipelined), larger ones
# atomic batches, whose staging cost is then spread over up to MAX_BATCH keys.
PIPELINE_MAX = 256
RAW_PUBLISH = all(hasattr(NATS, a) for a in ("_send_command", "_flush_pending"))


class ViewStore(Protocol):
    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]: ...

    async def get_matching(self, patterns: list[str]) -> dict[str, dict[str, Any]] | None: ...

    async def write(self, changes: list[Change]) -> None:
        """Apply in order; a failure part way leaves none of the later changes written."""
        ...


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


class ViewsLost(RuntimeError):
    """The bucket's stream stands before a write it acknowledged: the server lost the
    tail of a bucket stored without fsync (see `open_views`), or the bucket was dropped
    and made again. Whoever folds into it must start again from its stored checkpoint."""


async def open_views(js: JetStreamContext, bucket: str = BUCKET, replicas: int = 1) -> KeyValue:
    """A views bucket, created when missing. Views are disposable (the log rebuilds
    them), so on one replica the bucket is made with JetStream's `persist_mode: async`
    (nats-server 2.12+): acknowledged before it reaches the disk and never fsynced, even
    under `sync_interval: always`, which the log keeps. With `always`, a fsynced bucket
    made every view write wait for a fsync, and every read of the bucket wait for the
    writes' fsyncs (`bench/persist_modes.py`: a direct get beside four writers p50 1.15
    against 0.36 ms async).
    What a crash of nats-server loses is the tail of the bucket, its checkpoint with it,
    which the projector then folds again (`ViewsLost`). The persist mode is set when a
    bucket is made and cannot change: buckets made before keep theirs until a rebuild
    replaces them. Several replicas keep the server's default (async is R1 only)."""
    return await open_bucket(js, bucket, replicas, disposable=replicas == 1)


async def open_bucket(
    js: JetStreamContext,
    bucket: str = BUCKET,
    replicas: int = 1,
    history: int = 1,
    ttl: float | None = None,
    disposable: bool = False,
) -> KeyValue:
    """A KV bucket, created when missing; `ttl` is the max_age of its values (None: kept
    forever); `disposable`: stored with `persist_mode: async` (see `open_views`)."""

    async def open_or_create() -> KeyValue:
        try:
            return await js.key_value(bucket)
        except (BucketNotFoundError, NotFoundError):
            pass
        if disposable:
            await js.add_stream(_async_kv_stream(bucket, history, ttl))
            return await js.key_value(bucket)
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


def _async_kv_stream(bucket: str, history: int, ttl: float | None) -> StreamConfig:
    """The stream nats-py's `create_key_value` makes for a bucket (nats-py 2.16, one
    replica, file storage, direct gets), with `persist_mode: async`, which its
    KeyValueConfig cannot say."""
    return StreamConfig(
        name=f"KV_{bucket}",
        subjects=[f"$KV.{bucket}.>"],
        allow_direct=True,
        allow_rollup_hdrs=True,
        allow_msg_ttl=True,
        deny_delete=True,
        discard=DiscardPolicy.NEW,
        duplicate_window=min(ttl, 120.0) if ttl else 120.0,
        max_age=ttl,
        max_consumers=-1,
        max_msgs=-1,
        max_msgs_per_subject=history,
        num_replicas=1,
        storage=StorageType.FILE,
        persist_mode=PersistMode.ASYNC,
    )


class KVViews:
    """Views in a JetStream KV bucket.

    A write lands in order and stops at the first key refused, so what lands is a
    prefix: pipelined publishes, each expecting the stream's sequence before it, or on a
    bucket stored with fsync, for more than PIPELINE_MAX keys, JetStream atomic batches
    (nats-server 2.12+) of up to MAX_BATCH keys, one after the other: one
    acknowledgement, and with `sync_interval: always` one fsync, per batch.

    A rebuild, which writes a bucket nobody reads yet, uses `BulkViews` instead
    (projections/bulk_views.py).
    """

    def __init__(
        self,
        js: JetStreamContext,
        kv: KeyValue,
        bucket: str = BUCKET,
        timeout: float = 5.0,
    ) -> None:
        self.js = js
        self.kv = kv
        self.bucket = bucket
        self.timeout = timeout
        self.stream = f"KV_{bucket}"
        self._batches: bool | None = None  # large writes as atomic batches (None: not asked)
        self._last: int | None = None  # the stream's last sequence, after our last write

    async def flush(self) -> None:
        """Wait until everything written so far is stored: `write` already does here."""

    async def get(self, key: str) -> dict[str, Any] | None:
        request = {"last_by_subj": f"$KV.{self.bucket}.{key}"}
        try:
            msg = await direct_get(self.js._nc, self.stream, request, self.timeout)
        except DirectGetUnavailable as exc:
            raise nats.errors.TimeoutError from exc
        return _value(msg) if msg is not None else None

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        """Many keys in one batched direct get per 1,000 (the server answers up to 1,024
        subjects a request): a page costs one round trip, not one per key."""
        if len(keys) < 2:
            return [await self.get(k) for k in keys]
        prefix = f"$KV.{self.bucket}."
        try:
            msgs = await direct_last(
                self.js._nc, self.stream, [prefix + k for k in keys], self.timeout
            )
        except DirectGetUnavailable as exc:
            raise nats.errors.TimeoutError from exc
        found = {m.subject.removeprefix(prefix): _value(m) for m in msgs.values()}
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
        values = {m.subject.removeprefix(prefix): _value(m) for m in msgs}
        return {k: v for k, v in values.items() if v is not None}

    async def write(self, changes: list[Change]) -> None:
        """The prefix purges first (stream purges, concurrently), then the puts and deletes
        in their order, so that a failure leaves none of the later ones written: a small
        write (the live projector's) pipelined with a chained expected sequence
        (`_pipelined`), a large one in atomic batches, each acknowledged before the next
        is sent (pipelined too, a chunk at a time, on a bucket that takes no batches)."""
        messages = await self._purge_then_encode(changes)
        if not messages:
            return
        if len(messages) <= PIPELINE_MAX or not await self._can_batch():
            for start in range(0, len(messages), MAX_BATCH):
                await self._pipelined(messages[start : start + MAX_BATCH])
            return
        self._last = None  # the batches below move the stream on
        for start in range(0, len(messages), MAX_BATCH):
            await self._batch(messages[start : start + MAX_BATCH])

    async def _pipelined(self, messages: list[tuple[str, bytes | None]]) -> None:
        """Every message sent at once, in order, each acknowledged: one round trip. An
        atomic batch would do that too, but on a file stream of one replica nats-server
        stages each batch in a file store of its own, ~3 ms a batch against ~0.25 ms for
        a publish (measured with nats-server 2.15): that was most of the time from an
        append to its view. Each message expects the stream's last sequence to be the
        one before it (the projector is the bucket's only writer), so when one is
        refused every later one is refused too: what lands is a prefix, as from an
        atomic batch cut short, which the fold is built to repair. When another write
        moved the stream on (a purge's markers), the sequence is read again and the write
        sent again once: the same values, in the same order. When the stream stands
        before our last write instead, the server lost writes it acknowledged: ViewsLost."""
        prefix = f"$KV.{self.bucket}."
        inbox = await replies(self.js._nc)
        for attempt in range(2):
            if self._last is None:
                self._last = (await self.js.stream_info(self.stream)).state.last_seq
            futures: list[asyncio.Future[int]] = []
            try:
                for n, (key, value) in enumerate(messages):
                    headers = {
                        "Nats-Expected-Stream": self.stream,
                        "Nats-Expected-Last-Sequence": str(self._last + n),
                    }
                    if value is None:
                        headers["KV-Operation"] = "DEL"
                    futures.append(await publish_acked(inbox, prefix + key, value or b"", headers))
                # asyncio.timeout, not wait_for: on 3.11 wait_for swallows a cancellation
                # that comes as its future completes, and the projector then never stops.
                async with asyncio.timeout(self.timeout):
                    seqs = await asyncio.gather(*futures)
            except BaseException as exc:
                before, self._last = self._last, None
                for future in futures:
                    future.cancel()
                moved = isinstance(exc, APIError) and exc.err_code in WRONG_LAST_SEQUENCE
                if moved and attempt == 0:
                    now = (await self.js.stream_info(self.stream)).state.last_seq
                    if before is not None and now < before:
                        raise ViewsLost(
                            f"{self.stream} stands at {now}, before {before}, a write it "
                            "acknowledged"
                        ) from exc
                    self._last = now
                    continue
                raise
            self._last = seqs[-1]
            return

    async def _batch(self, messages: list[tuple[str, bytes | None]]) -> None:
        """One atomic batch: every message but the last sent as is, the last one (the
        commit) as a JetStream publish whose acknowledgement covers the whole batch."""
        prefix = f"$KV.{self.bucket}."
        *body, (last_key, last_value) = messages
        headers: dict[str, str] = {}
        if body:  # a single message is a plain publish (a KV put or delete)
            batch_id = new_id("vb")
            await send_messages(self.js._nc, prefix, body, batch_id)
            headers = {
                "Nats-Batch-Id": batch_id,
                "Nats-Batch-Sequence": str(len(messages)),
                "Nats-Batch-Commit": "1",
            }
        if last_value is None:
            headers["KV-Operation"] = "DEL"
        commit = self.js.publish(
            prefix + last_key,
            last_value or b"",
            timeout=self.timeout,
            stream=self.stream,
            headers=headers,
        )
        await commit

    async def _purge_then_encode(self, changes: list[Change]) -> list[tuple[str, bytes | None]]:
        """Run the prefix purges (concurrently, after everything written before is stored:
        a purge overtaking an earlier write would leave that write behind it), and return
        the puts and deletes as (key, value; None for a delete) in their order."""
        purges = [c for c in changes if isinstance(c, PurgePrefix)]
        if purges:
            await self.flush()
            await asyncio.gather(*(self._purge(c) for c in purges))
        messages: list[tuple[str, bytes | None]] = []
        for change in changes:
            if isinstance(change, Put):
                messages.append((change.key, codec.dumps(change.view)))
            elif isinstance(change, Delete):
                messages.append((change.key, None))
        return messages

    async def _can_batch(self) -> bool:
        """Whether the bucket takes atomic batches, asked once. Not one stored with
        `persist_mode: async`: nats-server refuses batches there, and with no fsync per
        message there is nothing for a batch to share. Otherwise `allow_atomic` is turned
        on (nats-py's KeyValueConfig has no such setting), for new buckets and for those
        of older versions."""
        if self._batches is None:
            config = (await self.js.stream_info(self.stream)).config
            if config.persist_mode == PersistMode.ASYNC:
                self._batches = False
            else:
                if not config.allow_atomic:
                    config.allow_atomic = True
                    await self.js.update_stream(config)
                self._batches = True
        return self._batches

    async def _purge(self, change: PurgePrefix) -> None:
        await self.js.purge_stream(self.stream, subject=f"$KV.{self.bucket}.{change.prefix}>")


def _value(msg: DirectMsg) -> dict[str, Any] | None:
    """A KV entry's view, None for a deleted or purged key (an empty marker)."""
    if msg.headers.get("KV-Operation") in ("DEL", "PURGE") or not msg.data:
        return None
    return codec.loads(msg.data)  # type: ignore[no-any-return]


async def send_messages(
    nc: NATS,
    prefix: str,
    messages: list[tuple[str, bytes | None]],
    batch_id: str | None = None,
    commit: bool = False,
) -> None:
    """Send (key, value; None: delete) messages with no reply as one write of protocol
    bytes: as an atomic batch `batch_id` (sequences from 1; the last one its commit if
    `commit`), or as plain KV puts and deletes without `batch_id`. `nc.publish` validates
    and encodes each message and its headers again, which costs several times more than
    the message itself in a rebuild. nats-py has no public call for that, so without its
    `_send_command` each goes through `publish`."""
    last = len(messages) if commit and batch_id else 0
    if not RAW_PUBLISH or nc.is_closed:
        for n, (key, value) in enumerate(messages, start=1):
            headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(n)} if batch_id else {}
            if n == last:
                headers["Nats-Batch-Commit"] = "1"
            if value is None:
                headers["KV-Operation"] = "DEL"
            await nc.publish(prefix + key, value or b"", headers=headers or None)
        return
    head = (
        b"NATS/1.0\r\nNats-Batch-Id: %s\r\nNats-Batch-Sequence: " % batch_id.encode()
        if batch_id
        else b""
    )
    parts = []
    for n, (key, value) in enumerate(messages, start=1):
        subject = (prefix + key).encode()
        if not batch_id and value is not None:
            parts.append(b"PUB %s %d\r\n%s\r\n" % (subject, len(value), value))
            continue
        hdr = b"%s%d\r\n" % (head, n) if batch_id else b"NATS/1.0\r\n"
        if n == last:
            hdr += b"Nats-Batch-Commit: 1\r\n"
        if value is None:
            hdr, value = hdr + b"KV-Operation: DEL\r\n\r\n", b""
        else:
            hdr += b"\r\n"
        size = len(hdr)
        parts.append(b"HPUB %s %d %d\r\n%s%s\r\n" % (subject, size, size + len(value), hdr, value))
    await nc._send_command(b"".join(parts))
    if nc._flush_queue is not None and nc._flush_queue.empty():  # as `publish` does
        await nc._flush_pending()


def subject_matches(pattern: str, key: str) -> bool:
    """NATS subject matching: `*` is one token, a final `>` one or more."""
    want, have = pattern.split("."), key.split(".")
    for n, token in enumerate(want):
        if token == ">":
            return len(have) > n
        if n >= len(have) or (token != "*" and token != have[n]):
            return False
    return len(have) == len(want)
