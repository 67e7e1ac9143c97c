"""A delivery's stream sequence, consumer sequence and pending count, read from its reply
subject, agree with nats-py's `Msg.metadata` for both forms of the subject and for real
deliveries."""

import nats
import pytest
from nats.aio.msg import Msg
from nats.errors import NotJSMessageError
from nats.js.api import StreamConfig

from events.connection import connect
from events.delivery import delivery, position, stream_seq

V1 = "$JS.ACK.CONVSTORE.projector.1.4242.17.1764650000000000000.9"
V2 = "$JS.ACK._.ACCHASH.CONVSTORE.projector.2.4243.18.1764650000000000000.0.RANDOM"
V2_SHORT = "$JS.ACK.hub.ACCHASH.CONVSTORE.projector.3.7.19.1764650000000000000.5"


@pytest.mark.parametrize("reply", [V1, V2, V2_SHORT])
def test_both_forms_of_the_reply_subject(reply: str) -> None:
    msg = Msg(None, subject="conv.x", reply=reply)  # type: ignore[arg-type]
    meta = msg.metadata
    assert position(msg) == (meta.sequence.stream, meta.num_pending)
    assert stream_seq(msg) == meta.sequence.stream
    assert delivery(msg) == (meta.sequence.stream, meta.sequence.consumer, meta.num_pending)


@pytest.mark.parametrize("reply", ["", "_INBOX.abc", "$JS.ACK.too.short"])
def test_a_message_that_is_no_delivery_fails_as_in_nats_py(reply: str) -> None:
    with pytest.raises(NotJSMessageError):
        position(Msg(None, subject="x", reply=reply))  # type: ignore[arg-type]


async def test_real_deliveries_agree_with_nats_py(nats_url: str) -> None:
    nc = await connect([nats_url], "test-delivery")
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="DELIVERY", subjects=["delivery.>"]))
        for n in range(5):
            await js.publish(f"delivery.{n}", b"x")
        pull = await js.pull_subscribe("delivery.>", durable="d", stream="DELIVERY")
        pushed = await js.subscribe("delivery.>", stream="DELIVERY", ordered_consumer=True)
        fetched = await pull.fetch(5, timeout=5)
        ordered = [await pushed.next_msg(timeout=5) for _ in range(5)]
        for msg in [*fetched, *ordered]:
            meta = msg.metadata
            assert position(msg) == (meta.sequence.stream, meta.num_pending)
            assert delivery(msg)[1] == meta.sequence.consumer
        assert [stream_seq(m) for m in ordered] == [1, 2, 3, 4, 5]
        await js.delete_stream("DELIVERY")
    finally:
        await nc.close()


def test_nats_py_still_has_the_forms_we_read() -> None:
    """If nats-py's own reading of the subject changes, this module must be looked at."""
    assert Msg.Ack.StreamSeq == 7 and Msg.Ack.NumPending == 10
    assert nats.aio.msg._V1_TOKEN_COUNT == 9
