"""Where a streamed response's time goes, from the timestamps JetStream stored.

Every step of a response that convstore persists is a message with the server's
timestamp: the request (CONVSTORE `response_requested`), the worker's claim
(`response_in_progress`), each streaming event (CONVSTORE_RESPONSE_STREAMS
`rstream.<id>`) and the outcome (`response_completed`). Set beside the client's wall
clock at send and at receipt (same machine, same clock), they split each response into
consecutive segments whose sum is the time the client saw:

  accept    send -> request stored (HTTP, validation, head read, append)
  claim     request stored -> claim stored (delivery to a worker, waiting for the projector
            to fold the request, state and context reads, the claim's append)
  start     claim stored -> first delta stored (response.created, .in_progress, the
            output item and content part, the first delta)
  relay     first delta stored -> client holds it (the API's consumer, SSE, HTTP)
  and to completion:
  generate  first delta stored -> outcome stored (the other deltas, closing the item,
            reading state, the outcome's append)
  confirm   outcome stored -> terminal event stored (waiting for the projector to fold
            the outcome, then response.completed)
  deliver   terminal event stored -> client holds it

Only on the benchmark's own server (it reads that server's streams).
"""

import contextlib
import json
from typing import Any

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy

from bench.http import Streamed
from bench.load import stock_connect
from bench.stats import summary
from events.response_stream import TERMINAL_TYPES
from events.subjects import RESPONSE_STREAM_NAME, STREAM_NAME

SEGMENTS = (
    ("accept", "sent", "requested"),
    ("claim", "requested", "claimed"),
    ("start", "claimed", "first_delta_stored"),
    ("relay", "first_delta_stored", "first_delta"),
    ("generate", "first_delta_stored", "outcome"),
    ("confirm", "outcome", "terminal_stored"),
    ("deliver", "terminal_stored", "completed"),
)
LOG_EVENTS = {
    "response_requested": "requested",
    "response_in_progress": "claimed",
    "response_completed": "outcome",
}


async def last_seqs(nats_url: str) -> dict[str, int]:
    """The last sequence of both streams now: read the next series from after these."""
    nc = await stock_connect(nats_url, "bench-milestones")
    try:
        js = nc.jetstream(timeout=30)
        return {
            name: (await js.stream_info(name)).state.last_seq
            for name in (STREAM_NAME, RESPONSE_STREAM_NAME)
        }
    finally:
        await nc.close()


async def _read(js: Any, stream: str, subject: str, after: int, until: int) -> list[Any]:
    """Every message of `stream` on `subject` after sequence `after`, up to `until`."""
    if until <= after:
        return []
    sub = await js.subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1
        ),
    )
    out: list[Any] = []
    try:
        while True:
            msg = await sub.next_msg(timeout=10)
            out.append(msg)
            if msg.metadata.sequence.stream >= until:
                return out
    except (TimeoutError, nats.errors.TimeoutError):
        return out  # the filter skipped the stream's last messages
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def measure(nats_url: str, since: dict[str, int], samples: list[Streamed]) -> dict[str, Any]:
    """Per-segment summaries (and the milestones found) for `samples`, which were sent
    after `since` (from last_seqs)."""
    times: dict[str, dict[str, float]] = {
        s.response_id: _client_times(s) for s in samples if s.response_id
    }
    nc = await stock_connect(nats_url, "bench-milestones")
    try:
        js = nc.jetstream(timeout=30)
        now = await last_seqs(nats_url)
        for msg in await _read(js, STREAM_NAME, "conv.>", since[STREAM_NAME], now[STREAM_NAME]):
            milestone = LOG_EVENTS.get(msg.subject.rpartition(".")[2])
            if milestone is None:
                continue
            rid = json.loads(msg.data).get("response_id")
            if rid in times:
                times[rid].setdefault(milestone, msg.metadata.timestamp.timestamp())
        stream = RESPONSE_STREAM_NAME
        for msg in await _read(js, stream, "rstream.>", since[stream], now[stream]):
            rid = msg.subject.partition(".")[2]
            if rid not in times:
                continue
            kind = json.loads(msg.data).get("type")
            if kind == "response.output_text.delta":
                times[rid].setdefault("first_delta_stored", msg.metadata.timestamp.timestamp())
            elif kind in TERMINAL_TYPES:
                times[rid].setdefault("terminal_stored", msg.metadata.timestamp.timestamp())
    finally:
        await nc.close()
    result: dict[str, Any] = {}
    for name, start, end in SEGMENTS:
        spans = [t[end] - t[start] for t in times.values() if start in t and end in t]
        result[name] = _short(summary(spans))
    result["responses_traced"] = sum(
        1 for t in times.values() if all(m in t for _, a, b in SEGMENTS for m in (a, b))
    )
    return result


def _client_times(s: Streamed) -> dict[str, float]:
    times = {"sent": s.sent_at, "completed": s.sent_at + s.completed}
    if s.first_delta is not None:
        times["first_delta"] = s.sent_at + s.first_delta
    return times


def _short(s: dict[str, Any]) -> dict[str, Any]:
    """p50, p90, mean: enough to say which segment the time is in (no CDF)."""
    return {k: s[k] for k in ("n", "p50_ms", "p90_ms", "mean_ms") if k in s}
