"""Turns a provider's chunks into OpenAI output items and their streaming events.

Text becomes one assistant message item; each function call its own item. Every item
is announced (`output_item.added`), grows by deltas, and is closed (`*.done`,
`output_item.done`) in the order OpenAI's Responses streams use.
"""

import secrets
from typing import Any

from events.ids import new_item_id
from events.response_stream import StreamWriter
from workers.providers.base import Chunk, Finish, TextDelta, ToolCallDelta, Usage


class OutputBuilder:
    def __init__(self, writer: StreamWriter, thread: str) -> None:
        self.writer = writer
        self.thread = thread  # the response's thread: its items' ids name it
        self.output: list[dict[str, Any]] = []
        self.usage: Usage | None = None
        self.finish: str | None = None
        self._text: dict[str, Any] | None = None  # the open message item
        self._calls: dict[int, dict[str, Any]] = {}  # open function calls by upstream index

    @property
    def started(self) -> bool:
        """True once any output went out: from then on a retry would repeat it."""
        return bool(self.output)

    async def add(self, chunk: Chunk) -> None:
        if isinstance(chunk, TextDelta):
            await self._text_delta(chunk.text)
        elif isinstance(chunk, ToolCallDelta):
            await self._call_delta(chunk)
        elif isinstance(chunk, Usage):
            self.usage = chunk
        elif isinstance(chunk, Finish):
            self.finish = chunk.reason

    async def _open(self, item: dict[str, Any]) -> int:
        self.output.append(item)
        index = len(self.output) - 1
        await self.writer.emit("response.output_item.added", output_index=index, item=dict(item))
        return index

    async def _text_delta(self, text: str) -> None:
        if self._text is None:
            item = {
                "id": new_item_id("message", self.thread),
                "type": "message",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            }
            index = await self._open(item)
            self._text = {"item": item, "index": index, "text": ""}
            await self.writer.emit(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=_text_part(""),
            )
        self._text["text"] += text
        await self.writer.emit(
            "response.output_text.delta",
            item_id=self._text["item"]["id"],
            output_index=self._text["index"],
            content_index=0,
            delta=text,
            logprobs=[],
        )

    async def _call_delta(self, chunk: ToolCallDelta) -> None:
        call = self._calls.get(chunk.index)
        if call is None:
            item = {
                "id": new_item_id("function_call", self.thread),
                "type": "function_call",
                "status": "in_progress",
                "call_id": chunk.call_id or f"call_{secrets.token_hex(12)}",
                "name": chunk.name or "",
                "arguments": "",
            }
            index = await self._open(item)
            call = self._calls[chunk.index] = {"item": item, "index": index}
        item = call["item"]
        if chunk.name and not item["name"]:
            item["name"] = chunk.name
        if chunk.arguments:
            item["arguments"] += chunk.arguments
            await self.writer.emit(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=call["index"],
                delta=chunk.arguments,
            )

    async def close(self, status: str = "completed") -> list[dict[str, Any]]:
        """Close every open item (in output order) and return the final output."""
        if self._text is not None:
            item, index, text = self._text["item"], self._text["index"], self._text["text"]
            part = _text_part(text)
            item.update(status=status, content=[part])
            common = {"item_id": item["id"], "output_index": index, "content_index": 0}
            await self.writer.emit("response.output_text.done", **common, text=text, logprobs=[])
            await self.writer.emit("response.content_part.done", **common, part=part)
            await self.writer.emit("response.output_item.done", output_index=index, item=item)
            self._text = None
        for call in sorted(self._calls.values(), key=lambda c: c["index"]):
            item = call["item"]
            item["status"] = status
            await self.writer.emit(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=call["index"],
                name=item["name"],
                arguments=item["arguments"],
            )
            await self.writer.emit(
                "response.output_item.done", output_index=call["index"], item=item
            )
        self._calls = {}
        return self.output


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
