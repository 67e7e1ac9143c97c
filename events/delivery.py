"""Where a JetStream delivery sits in its stream, read from the reply subject.

A delivered message's reply subject is `$JS.ACK.<stream>.<consumer>.<delivered>.<stream
seq>.<consumer seq>.<time>.<pending>` (9 tokens), or the same with `<domain>.<account
hash>` after `$JS.ACK` and a random token at the end (ADR-15). nats-py's `Msg.metadata`
makes a datetime and three dataclasses of it per message, about 7% of a rebuild's CPU
(which reads a million): the fold needs two integers.
"""

from nats.aio.msg import Msg

_V1 = 9  # tokens of the old form


def stream_seq(msg: Msg) -> int:
    """The message's sequence in its stream."""
    return position(msg)[0]


def position(msg: Msg) -> tuple[int, int]:
    """(stream sequence, messages still pending after it for this consumer)."""
    seq, _, pending = delivery(msg)
    return seq, pending


def delivery(msg: Msg) -> tuple[int, int, int]:
    """(stream sequence, consumer sequence, messages still pending): an ordered reader
    checks the consumer sequence to see that no delivery was lost on the way."""
    tokens = (msg.reply or "").split(".")
    if tokens[:2] == ["$JS", "ACK"]:
        if len(tokens) == _V1:
            return int(tokens[5]), int(tokens[6]), int(tokens[8])
        if len(tokens) >= _V1 + 2:
            return int(tokens[7]), int(tokens[8]), int(tokens[10])
    meta = msg.metadata  # not a JetStream delivery: nats-py raises as it would
    return meta.sequence.stream, meta.sequence.consumer, meta.num_pending
