"""An OpenAI-compatible upstream through `/chat/completions` with streaming.

Chat Completions is what OpenAI, vLLM, Ollama, LiteLLM and most gateways all speak, so
Responses items are translated to chat messages and the streamed chunks back.
"""

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx

from workers.providers.base import (
    CONTEXT_EXCEEDED,
    Chunk,
    Finish,
    ModelCall,
    ProviderError,
    TextDelta,
    ToolCallDelta,
    Usage,
    item_text,
)


def _content(item: dict[str, Any]) -> str | list[dict[str, Any]]:
    parts = item.get("content")
    if isinstance(parts, str):
        return parts
    parts = parts if isinstance(parts, list) else []
    if all(isinstance(p, dict) and "text" in p for p in parts):
        return item_text(item)
    out: list[dict[str, Any]] = []
    for p in parts:
        if not isinstance(p, dict):
            continue
        if "text" in p:
            out.append({"type": "text", "text": p["text"]})
        elif p.get("type") == "input_image" and p.get("image_url"):
            out.append({"type": "image_url", "image_url": {"url": p["image_url"]}})
    return out


def to_messages(instructions: str | None, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Responses items as chat messages (items a chat model cannot take are left out)."""
    messages: list[dict[str, Any]] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role", "user")
            messages.append(
                {"role": "system" if role == "developer" else role, "content": _content(item)}
            )
        elif kind == "function_call":
            call = {
                "id": item.get("call_id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
            }
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item.get("call_id"),
                    "content": output if isinstance(output, str) else json.dumps(output),
                }
            )
    return messages


def to_body(call: ModelCall) -> dict[str, Any]:
    p = call.params
    body: dict[str, Any] = {
        "model": call.model,
        "messages": to_messages(call.instructions, call.items),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("user", "user")):
        if ours in p:
            body[theirs] = p[ours]
    if "max_output_tokens" in p:
        body["max_tokens"] = p["max_output_tokens"]
    effort = (p.get("reasoning") or {}).get("effort")
    if isinstance(effort, str):  # reasoning models: Chat Completions' name for it
        body["reasoning_effort"] = effort
    verbosity = (p.get("text") or {}).get("verbosity")
    if isinstance(verbosity, str):
        body["verbosity"] = verbosity
    tools = [t for t in p.get("tools", []) if t.get("type") == "function"]
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    k: t[k] for k in ("name", "description", "parameters", "strict") if k in t
                },
            }
            for t in tools
        ]
        if "parallel_tool_calls" in p:
            body["parallel_tool_calls"] = p["parallel_tool_calls"]
        choice = p.get("tool_choice")
        if isinstance(choice, str):
            body["tool_choice"] = choice
        elif isinstance(choice, dict) and choice.get("type") == "function":
            body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    fmt = (p.get("text") or {}).get("format") or {}
    if fmt.get("type") == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        body["response_format"] = {"type": "json_schema", "json_schema": schema}
    return body


def _error(status: int, text: str, retry_after: str | None) -> ProviderError:
    try:
        detail = json.loads(text).get("error") or {}
    except (ValueError, AttributeError):
        detail = {}
    message = str(detail.get("message") or text[:500] or f"upstream answered {status}")
    if status == 429:
        wait = float(retry_after) if retry_after and retry_after.isdigit() else None
        return ProviderError("rate_limit_exceeded", message, retryable=True, retry_after=wait)
    if status >= 500:
        return ProviderError("server_error", message, retryable=True)
    code = detail.get("code")
    if code == CONTEXT_EXCEEDED or (status in (400, 413) and _TOO_LONG.search(text)):
        return ProviderError(CONTEXT_EXCEEDED, message, retryable=False)
    # Some servers put the HTTP status in `code` (vLLM: 400): an OpenAI code is a string.
    code = code if isinstance(code, str) and code else "invalid_prompt"
    return ProviderError(code, message, retryable=False)


# How OpenAI-compatible servers say that the prompt does not fit: vLLM, LiteLLM and
# llama.cpp ("maximum context length", "context window", "exceeds the available context
# size"), TGI and others ("too many tokens", "prompt is too long", "input is too long").
_TOO_LONG = re.compile(
    r"context[ _](length|window|size)|maximum context|too many (input )?tokens|"
    r"(prompt|input) is too long",
    re.IGNORECASE,
)


def parse_chunk(data: dict[str, Any]) -> list[Chunk]:
    out: list[Chunk] = []
    for choice in data.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            out.append(TextDelta(delta["content"]))
        for tc in delta.get("tool_calls") or []:
            fn = tc.get("function") or {}
            out.append(
                ToolCallDelta(
                    index=int(tc.get("index", 0)),
                    call_id=tc.get("id"),
                    name=fn.get("name"),
                    arguments=fn.get("arguments") or "",
                )
            )
        if choice.get("finish_reason"):
            out.append(Finish(choice["finish_reason"]))
    usage = data.get("usage")
    if usage:
        out.append(Usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)))
    return out


class OpenAIChatProvider:
    name = "openai-chat"

    def __init__(self, base_url: str, api_key: str | None, timeout: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = httpx.Timeout(timeout, connect=10.0)

    async def stream(self, call: ModelCall) -> AsyncIterator[Chunk]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            async with (
                httpx.AsyncClient(timeout=self.timeout) as client,
                client.stream(
                    "POST",
                    f"{self.base_url}/chat/completions",
                    json=to_body(call),
                    headers=headers,
                ) as response,
            ):
                if response.status_code != 200:
                    text = (await response.aread()).decode(errors="replace")
                    raise _error(response.status_code, text, response.headers.get("retry-after"))
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    for chunk in parse_chunk(json.loads(payload)):
                        yield chunk
        except httpx.TimeoutException as exc:
            raise ProviderError(
                "timeout", f"The model did not answer in time: {exc}", retryable=True
            ) from exc
        except httpx.TransportError as exc:
            raise ProviderError(
                "server_error", f"The model provider could not be reached: {exc}", retryable=True
            ) from exc
        except ValueError as exc:
            raise ProviderError(
                "server_error", f"Unreadable upstream stream: {exc}", retryable=False
            ) from exc
