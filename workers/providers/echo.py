"""`echo`: a built-in, deterministic TEST provider, so the service runs offline.

It is not a model. It answers `echo: <the last user message>`, word by word, and says
how many messages of context it saw, which is enough to check conversation state and
streaming end to end. Configure a real upstream (CONVSTORE_MODELS) for anything else.
"""

import asyncio
from collections.abc import AsyncIterator

from workers.providers.base import Chunk, Finish, ModelCall, TextDelta, Usage, item_text


class EchoProvider:
    name = "echo"

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay  # seconds between deltas, to look like a model

    async def stream(self, call: ModelCall) -> AsyncIterator[Chunk]:
        messages = [i for i in call.items if i.get("type", "message") == "message"]
        last = next((item_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
        reply = f"echo: {last} (context: {len(messages)} messages)"
        words = reply.split(" ")
        limit = call.params.get("max_output_tokens")
        cut = isinstance(limit, int) and len(words) > limit
        for n, word in enumerate(words[:limit] if cut else words):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield TextDelta(word if n == 0 else f" {word}")
        seen = sum(len(item_text(m).split()) for m in messages)
        yield Usage(input_tokens=seen, output_tokens=min(len(words), limit or len(words)))
        yield Finish("length" if cut else "stop")
