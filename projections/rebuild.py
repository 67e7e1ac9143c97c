"""Rebuild views from sequence 1 while everything keeps serving.

The new generation (bucket + durable consumer) is folded from the log beside the
live one, caught up, and then the views pointer is flipped: projectors move to
the new consumer, which starts right after the last event the rebuild folded, and
readers move to the new bucket. The old generation is then dropped.
"""

import asyncio
import contextlib
import json
import secrets
import sys
from collections.abc import Callable

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError
from nats.js.kv import KeyValue

from events.schema import Event
from events.store import EventStore
from events.subjects import ALL_EVENTS, STREAM_NAME
from projections.active import POLL, Generation, current, flip, meta_bucket
from projections.apply import Put
from projections.bulk_views import BulkViews, ViewsNotStored
from projections.fold import Folder
from projections.log_reader import FOLD_BATCH, LogReader
from projections.shards import MARKERS, fold_shard
from projections.store import BUCKET, ViewStore, open_views
from projections.views import CHECKPOINT_KEY
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
    subjects: Callable[[str], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Fold the events after `after` up to `up_to` (default: the log's end now); only
    those whose subject `subjects` keeps, when given (before decoding them).

    Returns the last sequence read (`after` when there was nothing to read).
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
            seq, read = seqs[-1], len(batch)
            if subjects is not None:
                kept = [i for i, m in enumerate(batch) if subjects(m.subject)]
                batch, seqs = [batch[i] for i in kept], [seqs[i] for i in kept]
            events = decode_batch(batch, seqs)
            await folder.fold(events if keep is None else [e for e in events if keep(e)])
            if progress:
                progress(read)
    return seq


async def rebuild(
    store: EventStore,
    replicas: int = 1,
    progress: Callable[[int], None] | None = None,
    live: Callable[[], None] | None = None,
    shards: int = 1,
) -> tuple[int, Generation]:
    """Build a new views generation from the whole log and make it the live one, then
    drop the old one once projectors and readers had time to move over (`live` is called
    in between: from then on the new views serve). `shards` > 1 folds the log in that
    many processes at once (projections/shards.py), this one included.

    Returns the last sequence the rebuild folded itself and the new generation.
    """
    js = store.js
    meta = await meta_bucket(js, replicas)
    old = await current(meta)
    suffix = secrets.token_hex(4)
    new = Generation(bucket=f"{BUCKET}_{suffix}", durable=f"projector_{suffix}")
    kv = await open_views(js, new.bucket, replicas)
    # Nobody reads the new bucket before the flip: keys stored behind the next fold,
    # confirmed by the stream's position; views a lone folder never wrote are absent.
    views = BulkViews(js, kv, new.bucket, timeout=store.timeout)
    if shards > 1:
        last = await fold_sharded(store, kv, new.bucket, shards, replicas, progress)
        folder = Folder(views)  # the other shards wrote keys this process never saw
        await views.write([Put(CHECKPOINT_KEY, {"seq": last})])
    else:
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


async def fold_sharded(
    store: EventStore,
    kv: KeyValue,
    bucket: str,
    shards: int,
    replicas: int,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Fold the log as it is now into the new `bucket` in `shards` processes: shard 0
    here, the others as `python -m projections.shards`. Returns the last sequence folded;
    raises ViewsNotStored when the bucket holds fewer messages than the shards sent (a
    key refused), or a shard failed."""
    end = await store.last_seq()
    urls = ",".join(url.geturl() for url in store.nc.servers)
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "projections.shards",
            *("--nats-url", urls, "--bucket", bucket, "--shard", str(shard)),
            *("--shards", str(shards), "--up-to", str(end), "--replicas", str(replicas)),
            *("--timeout", str(store.timeout)),
            stdout=asyncio.subprocess.PIPE,
        )
        for shard in range(1, shards)
    ]
    try:
        sent = await fold_shard(store, kv, bucket, 0, shards, end, progress)
        for child in children:
            out, _ = await child.communicate()
            if child.returncode != 0:
                raise ViewsNotStored(f"a rebuild shard exited with {child.returncode}")
            sent += int(json.loads(out)["sent"])
    finally:
        for child in children:
            if child.returncode is None:
                child.kill()
                await child.wait()
    stored = (await store.js.stream_info(f"KV_{bucket}")).state.last_seq
    if stored != sent:
        raise ViewsNotStored(f"KV_{bucket} holds {stored} messages, the shards sent {sent}")
    await store.js.purge_stream(f"KV_{bucket}", subject=f"$KV.{bucket}.{MARKERS}.>")
    return end
