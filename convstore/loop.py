"""The event loop every convstore process (and the benchmark) runs on."""

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop where it is installed (uvicorn[standard] brings it on Linux
    and macOS): the API, projector and worker spend much of their CPU in the event loop
    and its transports, which uvloop runs in C. uvicorn picks uvloop only for a loop it
    creates itself, and serve creates its own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
