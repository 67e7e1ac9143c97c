"""The event loop every convstore process (and the benchmark) runs on."""

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

# Python's default (700, 10, 10) runs a young-generation collection every 700 net
# allocations. Folding, decoding and serving allocate many short-lived objects that
# reference counting already frees (almost no cycles), so those collections are nearly
# pure cost: a third of a rebuild's CPU. Collect a hundred times less often instead.
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Move everything alive now (modules, schemas, the app) out of the collector's view
    (`gc.freeze`: full collections no longer scan it) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop where it is installed (uvicorn[standard] brings it on Linux
    and macOS): the API, projector and worker spend much of their CPU in the event loop
    and its transports, which uvloop runs in C. uvicorn picks uvloop only for a loop it
    creates itself, and serve creates its own. The collector is tuned first."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
