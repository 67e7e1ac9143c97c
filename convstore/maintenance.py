"""Operator commands that change the store: rebuild (views) and purge (erasure)."""

import sys
import time

from tqdm import tqdm

from convstore.settings import Settings
from events.connection import connect
from events.purge import purge
from events.schema import Actor
from events.store import EventStore, ensure_stream
from projections.rebuild import rebuild


async def run_rebuild(settings: Settings) -> None:
    """Rebuild every view from the log while the API keeps serving; report the rate."""
    nc = await connect(settings.nats_urls, "convstore-rebuild")
    try:
        js = nc.jetstream(timeout=settings.request_timeout)
        await ensure_stream(js, replicas=settings.replicas)
        store = EventStore(nc, js, settings.request_timeout)
        total = await store.last_seq()
        began = time.monotonic()
        with tqdm(total=total, unit="event", desc="rebuild", file=sys.stderr) as bar:
            last, generation = await rebuild(
                store,
                settings.replicas,
                progress=bar.update,
                shards=settings.rebuild_shard_count(),
            )
            folded = bar.n
        seconds = time.monotonic() - began
        print(
            f"rebuilt views from {folded} events (log up to {last}) in {seconds:.1f}s, "
            f"{folded / max(seconds, 1e-9):,.0f} events/s; live views now in {generation.bucket}"
        )
    finally:
        await nc.drain()


async def run_purge(settings: Settings, conversation_id: str, reason: str | None) -> int:
    """Erase a conversation for good; exit 1 when there is no such conversation."""
    nc = await connect(settings.nats_urls, "convstore-purge")
    try:
        js = nc.jetstream(timeout=settings.request_timeout)
        store = EventStore(nc, js, settings.request_timeout)
        head = await store.head(conversation_id)
        if head is None:
            print(f"no conversation {conversation_id}", file=sys.stderr)
            return 1
        record = await purge(
            store, conversation_id, Actor(id="convstore purge", kind="system"), reason
        )
        if head.event_type == "ConversationPurged":  # finishes a purge cut short, if it was
            print(f"{conversation_id} was already purged; its record ({record.id}) remains")
        else:
            print(
                f"purged {record.purged_events} events of {conversation_id}; "
                f"a ConversationPurged record ({record.id}) remains"
            )
        return 0
    finally:
        await nc.drain()
