"""The rebuild's log reader (projections/log_reader.py) against a real nats-server: every
event of its range once and in order, through the flow control it answers itself and
through deliveries nats-py dropped on the way."""

import asyncio
import logging

from events.schema import ConversationCreated, ItemAdded
from events.store import EventStore
from events.subjects import STREAM_NAME
from projections import log_reader
from projections.log_reader import LogReader
from tests.test_projector import message


async def _log(store: EventStore, conversations: int, items: int, size: int = 10) -> int:
    for n in range(conversations):
        conv = f"conv_reader{n}"
        text = "x" * size
        events = [ItemAdded(conversation_id=conv, item=message(f"{k}{text}")) for k in range(items)]
        await store.append([ConversationCreated(conversation_id=conv, created_at=n), *events], 0)
    return await store.last_seq()


async def _read_all(reader: LogReader, pause: float = 0.0) -> list[int]:
    seen: list[int] = []
    while True:
        batch, seqs = await reader.take(50)
        if not batch:
            return seen
        assert [int(m.reply.split(".")[5]) for m in batch] == seqs
        seen += seqs
        await asyncio.sleep(pause)  # a slow fold: the buffer fills and the server waits


async def test_a_slow_reader_answers_flow_control_and_reads_everything(store, monkeypatch):
    """~12 MB: past the server's flow control window (~8 MB here), so the server waits for
    the reader's answers; unanswered, it stalls and only a new consumer reads on."""
    end = await _log(store, 30, 99, size=4000)
    monkeypatch.setattr(log_reader, "READ_AHEAD", 100)
    async with LogReader(store, 0, end) as reader:
        seen = await _read_all(reader, pause=0.001)
    assert seen == list(range(1, end + 1))
    assert reader.flow_controls > 0
    assert reader.restarts == 0


async def test_deliveries_nats_py_dropped_are_read_again(store, monkeypatch, caplog):
    """nats-py drops what does not fit its queue for the callback (a slow consumer): the gap
    in the consumer sequence starts a new consumer after the last event kept."""
    end = await _log(store, 5, 99)
    monkeypatch.setattr(log_reader, "READ_AHEAD", 10)
    monkeypatch.setattr(log_reader, "PENDING", 20)
    quick = EventStore(store.nc, store.js, timeout=1)  # a lost tail is asked for after 1 s
    with caplog.at_level(logging.CRITICAL):  # nats-py reports each slow consumer drop
        async with LogReader(quick, 100, end - 50) as reader:
            seen = await _read_all(reader, pause=0.01)
    assert seen == list(range(101, end - 50 + 1))
    assert reader.restarts > 0


async def test_a_consumer_lost_mid_read_is_replaced_after_a_quiet_timeout(store, monkeypatch):
    """An ephemeral consumer in memory is gone when its server restarts: no delivery and no
    gap to notice, so a quiet `timeout` asks the server, and a new consumer reads on. (Past
    the flow control window, so the server still holds events back when it goes.)"""
    end = await _log(store, 30, 99, size=4000)
    monkeypatch.setattr(log_reader, "READ_AHEAD", 50)
    quick = EventStore(store.nc, store.js, timeout=1)
    async with LogReader(quick, 0, end) as reader:
        _, seqs = await reader.take(50)
        await store.js.delete_consumer(STREAM_NAME, reader._consumer)
        seen = seqs + await _read_all(reader)
    assert seen == list(range(1, end + 1))
    assert reader.restarts == 1
