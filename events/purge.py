"""Erasure: remove a conversation's events for good, leaving only a purge record.

The record is appended first, with optimistic concurrency, so no write can slip in
between and the conversation answers 404 from then on; then every earlier message
of the conversation is purged from the stream. Re-running a purge that was cut
short finishes it.
"""

from events.chain import GENESIS
from events.commands import ConversationNotFound
from events.schema import Actor, ConversationPurged
from events.store import ConcurrencyConflict, EventStore
from events.subjects import STREAM_NAME, conversation_filter


async def purge(
    store: EventStore, conversation_id: str, actor: Actor, reason: str | None = None
) -> ConversationPurged:
    """Purge a conversation; returns the record left in its place."""
    subject = conversation_filter(conversation_id)
    while True:
        head = await store.head(conversation_id)
        if head is None:
            raise ConversationNotFound(conversation_id)
        if head.event_type == "ConversationPurged":
            record = await store.last_event(conversation_id)
            break
        info = await store.js.stream_info(STREAM_NAME, subjects_filter=subject)
        count = sum((info.state.subjects or {}).values())
        record = ConversationPurged(
            conversation_id=conversation_id, purged_events=count, reason=reason, actor=actor
        )
        try:
            seq = await store.append([record], head.seq, GENESIS, head.tenant)
        except ConcurrencyConflict:
            continue
        record = record.model_copy(update={"seq": seq})
        break
    assert isinstance(record, ConversationPurged)
    await store.js.purge_stream(STREAM_NAME, subject=subject, seq=record.seq)
    return record
