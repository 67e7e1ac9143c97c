"""The response stream's writer, on a real nats-server."""

import json

from events.connection import connect
from events.ids import new_response_id
from events.response_stream import StreamWriter, ensure_response_stream
from events.subjects import response_stream_subject


async def test_each_event_leaves_before_the_next_is_made(nats_url):
    """Chunks made without an await in between (echo, a burst from one upstream read):
    every event is written to the socket when emit returns, not held in nats-py's buffer
    until the worker next waits for I/O, which would put the first delta behind the last."""
    nc = await connect([nats_url], "test-writer")
    listener = await connect([nats_url], "test-listener")
    try:
        js = nc.jetstream()
        await ensure_response_stream(js)
        response_id = new_response_id(None)
        sub = await listener.subscribe(response_stream_subject(response_id))
        await listener.flush()
        writer = StreamWriter(nc, js, response_id, 0)
        for n in range(20):
            await writer.emit("response.output_text.delta", delta=f" {n}")
            assert nc.pending_data_size == 0
        await writer.emit("response.completed", response={"id": response_id})
        got = [json.loads((await sub.next_msg(timeout=5)).data) for _ in range(21)]
        assert [e["sequence_number"] for e in got] == list(range(21))
        assert got[-1]["type"] == "response.completed"
    finally:
        await listener.close()
        await nc.close()
