"""What a workload gets: where to send requests, how much to do, and the server (None
with --target, where only the HTTP workloads run and nothing can be waited on)."""

import asyncio
from dataclasses import dataclass

from bench.config import Sizes
from bench.server import ServeProcess

# Any name does on the benchmark's own server (serve answers every model with echo);
# with --target, a model that server has.
DEFAULT_MODEL = "gpt-4o-mini"


@dataclass
class Context:
    base_url: str  # the API root, ending in /v1
    sizes: Sizes
    procs: int | None  # client processes for 64-in-flight loads; None = automatic
    server: ServeProcess | None = None
    model: str = DEFAULT_MODEL  # what the responses workload asks for

    def pids(self) -> dict[str, int]:
        return self.server.pids() if self.server else {}

    async def settle(self, timeout: float = 600.0) -> float | None:
        """Let the projector fold whatever the last workload appended (own server only).

        Returns the seconds it took: how long the views trailed the log.
        """
        if self.server is None:
            return None
        return await asyncio.to_thread(self.server.wait_caught_up, timeout)
