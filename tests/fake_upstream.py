"""A fake OpenAI-compatible model server (`/v1/chat/completions`), as a real HTTP server.

What it does is chosen by words in the last user message, so a test steers it through
convstore without any back channel:
  SLOWSTART   wait 3 s before the first delta        SLOW   a delta every 0.1 s (60 of them)
  TOOL        call the first function tool            LENGTH stop at max tokens (finish 'length')
  FAIL500     answer 500 every time                   FAILONCE 500 on the first call of a text
  RATELIMIT   answer 429                              BADREQ 400 (not retried)
  HANG        send nothing for 60 s
Anything else: `fake: <last user text> [<n> messages]`, word by word.
Every request body is recorded (`GET /_requests`), and so is how each stream ended
(`GET /_streams`: finished, or dropped by the client, with times).
"""

import asyncio
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from convstore.embedded_nats import free_port


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for m in reversed(messages):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            return "".join(p.get("text", "") for p in c or [] if isinstance(p, dict))
    return ""


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def make_app() -> FastAPI:
    app = FastAPI()
    app.state.requests = []
    app.state.streams = []
    app.state.seen = set()

    @app.get("/_requests")
    async def requests() -> list[dict[str, Any]]:
        return list(app.state.requests)

    @app.get("/_streams")
    async def streams() -> list[dict[str, Any]]:
        return list(app.state.streams)

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        body = await request.json()
        app.state.requests.append(body)
        text = _last_user_text(body.get("messages", []))
        if "FAIL500" in text or ("FAILONCE" in text and text not in app.state.seen):
            app.state.seen.add(text)
            return JSONResponse({"error": {"message": "upstream exploded"}}, status_code=500)
        if "RATELIMIT" in text:
            return JSONResponse(
                {"error": {"message": "slow down", "code": "rate_limit_exceeded"}},
                status_code=429,
                headers={"Retry-After": "0"},
            )
        window = re.search(r"ctx(\d+)", str(body.get("model")))
        chat = [m for m in body.get("messages", []) if m.get("role") != "system"]
        if window and len(chat) > int(window.group(1)):
            # A model whose window holds ctx<N> messages, refusing as OpenAI does (or, for
            # models named *-vllm, as vLLM does: no `error` object, the status as `code`).
            message = f"This model's maximum context length is {window.group(1)} messages."
            if str(body.get("model")).endswith("-vllm"):
                return JSONResponse({"object": "error", "message": message, "code": 400}, 400)
            error = {"message": message, "code": "context_length_exceeded", "param": "messages"}
            return JSONResponse({"error": error}, status_code=400)
        if "BADREQ" in text:
            return JSONResponse(
                {"error": {"message": "bad prompt", "code": "invalid_prompt"}}, status_code=400
            )
        record: dict[str, Any] = {"text": text, "started": time.time(), "ended": None}
        app.state.streams.append(record)
        return StreamingResponse(_stream(body, text, record), media_type="text/event-stream")

    return app


async def _stream(body: dict[str, Any], text: str, record: dict[str, Any]) -> AsyncIterator[bytes]:
    try:
        if "SLOWSTART" in text:
            await asyncio.sleep(3)
        if "HANG" in text:
            await asyncio.sleep(60)
        tools = body.get("tools") or []
        if "TOOL" in text and tools:
            name = tools[0]["function"]["name"]
            first = {"index": 0, "id": "call_fake1", "type": "function"}
            yield _chunk({"tool_calls": [{**first, "function": {"name": name, "arguments": ""}}]})
            for part in ('{"city":', ' "Paris"}'):
                yield _chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
            yield _chunk({}, "tool_calls")
        else:
            n = len(body.get("messages", []))
            words = f"fake: {text} [{n} messages]".split(" ")
            if "SLOW" in text and "SLOWSTART" not in text:
                words = [f"w{i}" for i in range(60)]
            if "LENGTH" in text:
                words = words[:3]
            for i, word in enumerate(words):
                if "SLOW" in text and "SLOWSTART" not in text:
                    await asyncio.sleep(0.1)
                yield _chunk({"content": word if i == 0 else f" {word}"})
            yield _chunk({}, "length" if "LENGTH" in text else "stop")
        usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
        yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
        yield b"data: [DONE]\n\n"
        record.update(ended=time.time(), how="finished")
    except BaseException:
        record.update(ended=time.time(), how="dropped")
        raise


@contextmanager
def fake_upstream() -> Iterator[str]:
    """Serve the fake in a thread of this process; yields its base URL (…/v1)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(make_app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(5)
