"""Views written into a bucket nobody reads yet: a rebuild's new generation.

A rebuild writes about two keys per event of the log: into a bucket stored with
`persist_mode: async` (`open_views`) as plain KV puts, which nothing fsyncs; into one
stored with fsync as JetStream atomic batches of up to 1,000 keys, one stored write and
with `sync_interval: always` one fsync per batch (as plain publishes there, each key was
an fsync of its own: a 1,000,000-event rebuild ran at 3,400 events/s instead of 12,500).
Acknowledgements would buy a rebuild nothing but waiting: nobody reads its bucket before
the flip, and one that fails starts again into a new, empty bucket. So every message,
commits included, goes out with no reply, and the
stream's position confirms them: every key sent is exactly one message of the bucket's
stream, so its last sequence, minus the one it had before the first write, counts what
is stored. A batch the server refused (a message with no reply hears no error) shows as
a count that stops short, which `flush` turns into an error once it has not moved for
`timeout`.
"""

import asyncio
import time
from typing import Any

from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from events.ids import new_id
from events.store import MAX_BATCH
from projections.apply import Change
from projections.store import KVViews, send_messages

IN_FLIGHT = 32_000  # keys sent and not yet stored before a write waits (~32 MB of views)
POLL = 0.002  # seconds between looks at the stream's position while waiting


class ViewsNotStored(RuntimeError):
    """Keys sent to the bucket did not all land (refused, or the server went away)."""


class BulkViews(KVViews):
    """KVViews for the only writer of a bucket that nobody reads until it is done.

    `write` returns once its keys are sent, with up to IN_FLIGHT of them still being
    stored; reads, purges and `flush` first wait until everything sent is stored.
    """

    def __init__(
        self,
        js: JetStreamContext,
        kv: KeyValue,
        bucket: str,
        timeout: float = 5.0,
        in_flight: int = IN_FLIGHT,
    ) -> None:
        super().__init__(js, kv, bucket, timeout)
        self.in_flight = in_flight
        self._base: int | None = None  # the stream's last sequence before our first write
        self._sent = 0
        self._stored = 0

    async def write(self, changes: list[Change]) -> None:
        messages = await self._purge_then_encode(changes)
        if not messages:
            return
        batches = await self._can_batch()
        if self._base is None:
            self._base = await self._last_seq()
        prefix = f"$KV.{self.bucket}."
        for start in range(0, len(messages), MAX_BATCH):
            batch = messages[start : start + MAX_BATCH]
            batch_id = new_id("vb") if batches else None
            await send_messages(self.js._nc, prefix, batch, batch_id, commit=True)
            self._sent += len(batch)
        if self._sent - self._stored > self.in_flight:
            await self._stored_up_to(self.in_flight // 2)

    async def flush(self) -> None:
        """Wait until every key written so far is stored; raise if one never is."""
        await self._stored_up_to(0)

    async def get(self, key: str) -> dict[str, Any] | None:
        await self.flush()
        return await super().get(key)

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        await self.flush()
        return await super().get_many(keys)

    async def _stored_up_to(self, behind: int) -> None:
        """Wait until at most `behind` of the keys sent are not stored yet."""
        moved = time.monotonic()
        while self._sent - self._stored > behind:
            assert self._base is not None
            stored = await self._last_seq() - self._base
            if stored > self._sent:
                raise ViewsNotStored(
                    f"{self.stream} holds {stored} new messages, {self._sent} sent: "
                    "another writer is writing a bucket only the rebuild may write"
                )
            if stored > self._stored:
                self._stored, moved = stored, time.monotonic()
            elif time.monotonic() - moved > self.timeout:
                raise ViewsNotStored(
                    f"{self.stream}: {self._sent - self._stored} of {self._sent} keys sent "
                    f"were not stored within {self.timeout} s (refused, or lost)"
                )
            if self._sent - self._stored > behind:
                await asyncio.sleep(POLL)

    async def _last_seq(self) -> int:
        return int((await self.js.stream_info(self.stream)).state.last_seq)
