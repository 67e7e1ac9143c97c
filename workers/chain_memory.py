"""What a model worker knows of `previous_response_id` chains: each finished turn's part
of the context, so the next request does not read the whole chain back.

A chain is a linked list: each response names its previous one, and its context is every
earlier turn's input and output. Read from the log, a request on a chain of n turns costs
n steps of a few round trips each (200 turns: ~200 ms). A turn never changes once its
response finished, unless the response is deleted or erased, and either appends its event
to the response's thread. So a remembered turn is used only after checking that neither
event is there: for all remembered turns of a walk at once, in one batched direct get of
those subjects (events/history.py `last_seqs`; ~1 ms for 200 turns, where reading the
turns' heads would return their whole events: ~20 ms). Turns the worker has not seen
(another worker ran them) are read as before and remembered too, so each turn is read
about once per worker.
Only turns of responses without a conversation are remembered: a conversation's turn
includes the conversation as of then, whose thread moves with every new item.
"""

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from events import codec

SIZE = 100_000  # turns remembered per worker process
BUDGET = 32 * 1024 * 1024  # bytes of items (as JSON) remembered per worker process


@dataclass(frozen=True, slots=True)
class Turn:
    previous_id: str | None  # the next step back
    items: list[dict[str, Any]]  # its input and output
    size: int


class ChainMemory:
    """Finished turns by response id, least recently stored first out, within SIZE turns
    and BUDGET bytes."""

    def __init__(self, size: int = SIZE, budget: int = BUDGET) -> None:
        self.size = size
        self.budget = budget
        self.bytes = 0
        self._turns: OrderedDict[str, Turn] = OrderedDict()

    def __len__(self) -> int:
        return len(self._turns)

    def get(self, response_id: str) -> Turn | None:
        return self._turns.get(response_id)

    def put(self, response_id: str, previous_id: str | None, items: list[dict[str, Any]]) -> None:
        self.forget(response_id)
        size = len(codec.dumps(items))
        if size > self.budget // 4:
            return  # a huge turn is read each time rather than held
        self._turns[response_id] = Turn(previous_id, items, size)
        self.bytes += size
        while len(self._turns) > self.size or self.bytes > self.budget:
            _, dropped = self._turns.popitem(last=False)
            self.bytes -= dropped.size

    def forget(self, response_id: str) -> None:
        old = self._turns.pop(response_id, None)
        if old is not None:
            self.bytes -= old.size
