"""Rebuild views from sequence 1 while everything keeps serving.

The new generation (bucket + durable consumer) is folded from the log beside the
live one, caught up, and then the views pointer is flipped: projectors move to
the new consumer, which starts right after the last event the rebuild folded, and
readers move to the new bucket. The old generation is then dropped.
"""

import asyncio
import contextlib
import secrets
from collections.abc import Callable

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from events.schema import Event
from events.store import EventStore
from events.subjects import ALL_EVENTS, STREAM_NAME
from projections.active import POLL, Generation, current, flip, meta_bucket
from projections.bulk_views import BulkViews
from projections.fold import Folder
from projections.log_reader import FOLD_BATCH, LogReader
from projections.store import BUCKET, ViewStore, open_views
from projections.worker import ACK_WAIT, MAX_IN_FLIGHT, decode_batch

CATCH_UP_GAP = 100  # flip once the new views are this close to the log's end


async def fold_log(
    store: EventStore,
    views: ViewStore,
    *,
    after: int = 0,
    up_to: int | None = None,
    folder: Folder | None = None,
    keep: Callable[[Event], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Fold the events after `after` up to `up_to` (default: the log's end now).

    Returns the last sequence folded (`after` when there was nothing to fold).
    """
    end = await store.last_seq() if up_to is None else up_to
    if end <= after:
        return after
    folder = folder or Folder(views)
    seq = after
    async with LogReader(store, after, end) as reader:
        while seq < end:
            batch, seqs = await reader.take(FOLD_BATCH)
            if not batch:
                break
            events = decode_batch(batch, seqs)
            await folder.fold(events if keep is None else [e for e in events if keep(e)])
            seq = seqs[-1]
            if progress:
                progress(len(batch))
    return seq


async def rebuild(
    store: EventStore,
    replicas: int = 1,
    progress: Callable[[int], None] | None = None,
    live: Callable[[], None] | None = None,
) -> tuple[int, Generation]:
    """Build a new views generation from the whole log and make it the live one, then
    drop the old one once projectors and readers had time to move over (`live` is called
    in between: from then on the new views serve).

    Returns the last sequence the rebuild folded itself and the new generation.
    """
    js = store.js
    meta = await meta_bucket(js, replicas)
    old = await current(meta)
    suffix = secrets.token_hex(4)
    new = Generation(bucket=f"{BUCKET}_{suffix}", durable=f"projector_{suffix}")
    kv = await open_views(js, new.bucket, replicas)
    # Nobody reads the new bucket before the flip, and only this folder writes it: keys
    # stored behind the next fold, confirmed by the stream's position; views it never
    # wrote are absent.
    views = BulkViews(js, kv, new.bucket, timeout=store.timeout)
    folder = Folder(views, fresh=True)
    last = await fold_log(store, views, folder=folder, progress=progress)
    while await store.last_seq() - last > CATCH_UP_GAP:
        last = await fold_log(store, views, after=last, folder=folder, progress=progress)
    await views.flush()
    await js.add_consumer(
        STREAM_NAME,
        ConsumerConfig(
            durable_name=new.durable,
            deliver_subject=f"_CONVSTORE.deliver.{new.durable}",  # a push consumer
            filter_subject=ALL_EVENTS,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=last + 1,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT,
            max_ack_pending=MAX_IN_FLIGHT,
        ),
    )
    await flip(meta, new)
    if live:
        live()
    await asyncio.sleep(2 * POLL + 0.5)  # let projectors and readers move over
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(STREAM_NAME, old.durable)
    if old.bucket != new.bucket:
        with contextlib.suppress(NotFoundError):
            await js.delete_key_value(old.bucket)
    return last, new
