"""The provider interface: a model call in, a stream of chunks out."""

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ModelCall:
    """One call: the upstream model name, instructions, the whole context as Responses
    items (earlier turns, then this request's input), and the request's settings."""

    model: str
    instructions: str | None
    items: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """Part of a function call: the first chunk of a call carries its id and name."""

    index: int
    call_id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(frozen=True)
class Usage:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class Finish:
    """Why the model stopped: `stop`, `length` (max_output_tokens), `tool_calls`, ..."""

    reason: str


Chunk = TextDelta | ToolCallDelta | Usage | Finish


# The code of an upstream's "the context does not fit the model's window" (OpenAI's; other
# servers say it in words, see openai_chat._error): with `truncation: "auto"` the worker
# drops the oldest items and calls again (workers/context.py drop_oldest).
CONTEXT_EXCEEDED = "context_length_exceeded"


class ProviderError(Exception):
    """An upstream failure, as the OpenAI error the response will carry."""

    def __init__(
        self, code: str, message: str, *, retryable: bool, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after = retry_after


class Provider(Protocol):
    name: str

    def stream(self, call: ModelCall) -> AsyncIterator[Chunk]: ...


def item_text(item: dict[str, Any]) -> str:
    """The text of a message item (its text parts joined)."""
    content = item.get("content")
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict) and "text" in p)
