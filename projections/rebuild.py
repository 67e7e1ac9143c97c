"""Rebuild views from sequence 1: the proof that views are disposable."""

from collections.abc import Callable

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from events.schema import Event
from events.store import EventStore
from events.subjects import ALL_EVENTS, STREAM_NAME
from projections.fold import Folder
from projections.store import BUCKET, KVViews, ViewStore, open_bucket
from projections.worker import ACK_WAIT, BATCH, DURABLE, decode_batch


async def fold_log(
    store: EventStore,
    views: ViewStore,
    *,
    up_to: int | None = None,
    keep: Callable[[Event], bool] | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Fold every event (up to seq `up_to`, default the log's end now) into `views`.

    Returns the last sequence folded. Reads with an ordered consumer in batches.
    """
    end = await store.last_seq() if up_to is None else up_to
    if end == 0:
        return 0
    folder = Folder(views)
    sub = await store.js.pull_subscribe(
        ALL_EVENTS,
        stream=STREAM_NAME,
        config=ConsumerConfig(
            ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL, inactive_threshold=60
        ),
    )
    try:
        seq = 0
        while seq < end:
            batch = await sub.fetch(BATCH, timeout=store.timeout)
            batch = [m for m in batch if m.metadata.sequence.stream <= end]
            if not batch:
                break
            events = decode_batch(batch)
            await folder.fold([e for e in events if keep is None or keep(e)])
            seq = batch[-1].metadata.sequence.stream
            if progress:
                progress(len(batch))
        return seq
    finally:
        await sub.unsubscribe()


async def rebuild(store: EventStore, replicas: int = 1, bucket: str = BUCKET) -> int:
    """Drop the views and the projector's consumer, fold the whole log, hand over.

    Offline: stop projectors first. The new durable consumer starts right after
    the last folded event, so a projector started afterwards continues from there.
    """
    js: JetStreamContext = store.js
    for drop in (
        lambda: js.delete_consumer(STREAM_NAME, DURABLE),
        lambda: js.delete_key_value(bucket),
    ):
        try:
            await drop()
        except NotFoundError:
            pass
    kv = await open_bucket(js, bucket=bucket, replicas=replicas)
    last = await fold_log(store, KVViews(js, kv, bucket))
    await js.add_consumer(
        STREAM_NAME,
        ConsumerConfig(
            durable_name=DURABLE,
            filter_subject=ALL_EVENTS,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=last + 1,
            ack_wait=ACK_WAIT,
            max_ack_pending=1,
        ),
    )
    return last
