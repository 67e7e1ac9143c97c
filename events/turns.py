"""Commands on one conversation from one process take turns.

Optimistic concurrency lets any number of writers race for a conversation's next
sequence, but only one of them wins each round: the others were sent for nothing and
try again. With many concurrent requests on one conversation that is quadratic work,
and an atomic batch (a command of several events) is the dearest to lose: nats-server
stages each batch before refusing it. So within a process the commands on a
conversation run one at a time, in arrival order, each deciding on the head the one
before it left (no head read, no refusal). Writers in other processes still race, and
the append's guard still decides; this only stops a process from racing itself.
"""

import asyncio
import contextlib
from asyncio import Lock
from collections.abc import AsyncIterator, Callable

# How often a command waiting for its turn asks whether it may still wait (`ready`).
RECHECK = 0.1


class Turns:
    def __init__(self) -> None:
        # conversation id -> its lock and how many commands hold or wait for it; an entry
        # lives only while someone does, so idle conversations cost nothing.
        self._locks: dict[str, tuple[Lock, list[int]]] = {}

    @contextlib.asynccontextmanager
    async def of(
        self, conversation_id: str, ready: Callable[[], None] = lambda: None
    ) -> AsyncIterator[None]:
        """The conversation's turn. `ready` raises when waiting is pointless (NATS away):
        it is asked before waiting and while waiting, so a command queued behind one
        stuck on an unanswered append fails as fast as it would have alone."""
        entry = self._locks.get(conversation_id)
        if entry is None:
            entry = self._locks[conversation_id] = (Lock(), [0])
        lock, users = entry
        users[0] += 1
        try:
            await _acquire(lock, ready)
            try:
                yield
            finally:
                lock.release()
        finally:
            users[0] -= 1
            if not users[0]:
                del self._locks[conversation_id]

    def __len__(self) -> int:
        """Conversations with a command running or waiting (for tests)."""
        return len(self._locks)


async def _acquire(lock: Lock, ready: Callable[[], None]) -> None:
    """`lock`, in its queue order, asking `ready` meanwhile (the wait is not cancelled
    to ask, so the queue keeps its order)."""
    ready()
    if not lock.locked():
        await lock.acquire()  # free: taken at once, no task
        return
    acquiring = asyncio.ensure_future(lock.acquire())
    try:
        while not (await asyncio.wait({acquiring}, timeout=RECHECK))[0]:
            ready()
    except BaseException:
        if acquiring.done() and not acquiring.cancelled() and acquiring.exception() is None:
            lock.release()  # taken just as we gave up
        else:
            acquiring.cancel()
        raise
