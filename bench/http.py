"""The few OpenAI Conversations and Responses API calls the workloads make, with errors
that say why."""

import json
import time
from dataclasses import dataclass
from typing import Any

from bench.payload import http_item
from bench.wire import HttpConnection, Response


class HttpFailure(RuntimeError):
    pass


def checked(response: Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise HttpFailure(
            f"{response.method} {response.path}: HTTP {response.status_code} {response.text[:300]}"
        )
    return dict(response.json())


async def create_conversation(client: HttpConnection, items: int = 0) -> str:
    body: dict[str, Any] = {"metadata": {"bench": "convstore"}}
    if items:
        body["items"] = [http_item() for _ in range(items)]
    return str(checked(await client.post("conversations", json=body))["id"])


async def add_items(client: HttpConnection, conversation_id: str, count: int = 1) -> list[str]:
    body = {"items": [http_item() for _ in range(count)]}
    page = checked(await client.post(f"conversations/{conversation_id}/items", json=body))
    return [item["id"] for item in page["data"]]


async def list_items(
    client: HttpConnection,
    conversation_id: str,
    order: str = "desc",
    after: str | None = None,
    limit: int = 20,
) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit, "order": order}
    if after:
        params["after"] = after
    return checked(await client.get(f"conversations/{conversation_id}/items", params=params))


TERMINAL = frozenset(
    {"response.completed", "response.incomplete", "response.failed", "response.cancelled", "error"}
)


@dataclass
class Streamed:
    """When each milestone of one streamed response reached the client, in seconds from
    sending the request: the HTTP headers (the request was accepted and stored), the first
    SSE event, the first `response.output_text.delta` frame, and the terminal event."""

    accepted: float
    first_event: float
    first_delta: float | None  # None: the output had no text (e.g. only a tool call)
    completed: float
    deltas: int
    events: int
    text: str
    response_id: str | None  # from the first event that carries the Response
    sent_at: float  # wall clock (time.time()), to line up with the servers' timestamps


def _frame_type(frame: bytes) -> tuple[str, bytes]:
    """(event type, data) of one SSE frame; the type from `data`'s JSON when the server
    sends no `event:` line."""
    kind, data = "", b""
    for line in frame.split(b"\n"):
        if line.startswith(b"event:"):
            kind = line[6:].strip().decode()
        elif line.startswith(b"data:"):
            data = line[5:].strip()
    if not kind and data.startswith(b"{"):
        kind = str(json.loads(data).get("type", ""))
    return kind, data


async def stream_response(
    client: HttpConnection, body: dict[str, Any], text: bool = False
) -> Streamed:
    """POST /responses with `stream: true` and time it frame by frame.

    Parses SSE from the raw bytes (a frame ends at a blank line) rather than line by line:
    16 streams of ~50 deltas each are thousands of frames a second, and the client must not
    be what is measured. A stream that does not end with `response.completed` (or
    `.incomplete`) is an error. `text` also collects the deltas (to check the answer).
    """
    sent_at, start = time.time(), time.perf_counter()
    first_event = 0.0
    response_id: str | None = None
    first_delta: float | None = None
    deltas = events = 0
    parts: list[str] = []
    done: Streamed | None = None
    async with client.stream("POST", "responses", json={**body, "stream": True}) as response:
        accepted = time.perf_counter() - start
        if response.status_code != 200:
            await response.aread()
            raise HttpFailure(f"POST /responses: HTTP {response.status_code} {response.text[:300]}")
        buffer = b""
        # Read to the end even after the terminal event: a body left unread would close
        # the keep-alive connection, and the next request would pay for a new one.
        async for chunk in response.aiter_bytes():
            now = time.perf_counter() - start
            buffer += chunk.replace(b"\r\n", b"\n") if b"\r" in chunk else chunk
            while done is None and (end := buffer.find(b"\n\n")) >= 0:
                frame, buffer = buffer[:end], buffer[end + 2 :]
                kind, data = _frame_type(frame)
                if not kind:
                    continue  # a comment or keep-alive
                events += 1
                first_event = first_event or now
                if response_id is None and kind.startswith("response.") and b'"response"' in data:
                    response_id = json.loads(data).get("response", {}).get("id")
                if kind == "response.output_text.delta":
                    deltas += 1
                    first_delta = now if first_delta is None else first_delta
                    if text:
                        parts.append(json.loads(data)["delta"])
                elif kind in TERMINAL:
                    if kind not in ("response.completed", "response.incomplete"):
                        raise HttpFailure(f"streamed response ended with {kind}: {data[:300]!r}")
                    text_ = "".join(parts)
                    done = Streamed(
                        accepted,
                        first_event,
                        first_delta,
                        now,
                        deltas,
                        events,
                        text_,
                        response_id,
                        sent_at,
                    )
    if done is None:
        raise HttpFailure(f"stream closed after {events} events without a terminal event")
    return done
