"""Two API processes and two projectors at once: read-your-writes across them, and the
standby projector taking over from a killed leader."""

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import (
    Load,
    check_log,
    kill9,
    lease_holder_pid,
    log_figures,
    statuses,
    views_match_rebuild,
)
from tests.servers import Service, api_process, nats_server

pytestmark = pytest.mark.reliability


class Stack:
    def __init__(self, url: str, apis: list[tuple[Service, str]], projectors: list[Service]):
        self.url = url
        self.apis = apis
        self.projectors = projectors

    @property
    def api_urls(self) -> list[str]:
        return [u for _, u in self.apis]

    def projector(self, pid: int | None) -> Service:
        return next(p for p in self.projectors if p.process and p.process.pid == pid)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    with nats_server(tmp_path / "nats") as url:
        projectors = [
            Service(["projector", "--nats-url", url], tmp_path / f"projector{n}.log").start()
            for n in range(2)
        ]
        apis = [api_process(url, tmp_path / f"api{n}.log") for n in range(2)]
        try:
            for api, api_url in apis:
                api.wait_http(api_url, "/readyz")
            yield Stack(url, apis, projectors)
        finally:
            for api, _ in apis:
                api.stop()
            for projector in projectors:
                projector.stop()


async def _leader(stack: Stack, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    pids = {p.process.pid for p in stack.projectors if p.process and p.process.poll() is None}
    while (pid := await lease_holder_pid([stack.url])) not in pids:
        assert time.monotonic() < deadline, f"no live projector holds the lease ({pid})"
        await asyncio.sleep(0.1)
    assert pid is not None
    return pid


async def test_read_your_writes_across_two_apis_and_two_projectors(stack, report):
    """Each acknowledged item write is read at once from the other API replica."""
    leader = await _leader(stack)
    load = Load(stack.api_urls, workers=12, total=800, seed=4, ryw=True)
    await load.run()
    reads = [w for w in load.writes if w.read_status is not None]
    log = await check_log([stack.url], load)
    views = await views_match_rebuild([stack.url], load)
    figures = {
        **log_figures(log, load),
        "reads_on_the_other_replica": len(reads),
        "read_statuses": statuses_of(reads),
        "stale_reads_404": sum(1 for w in reads if w.read_status == 404),
        "lease_holder_unchanged": await lease_holder_pid([stack.url]) == leader,
        "faults_injected": "none",
        **views,
    }
    report(figures)
    assert set(statuses(load.writes)) == {"200"}, figures
    assert len(reads) > 500 and all(w.read_status == 200 for w in reads), figures
    assert figures["lease_holder_unchanged"], "leadership moved without a fault"
    assert log.missing == [], log.missing[:5]
    assert views["keys_differing_from_rebuild"] == 0, figures


async def test_standby_projector_takes_over_from_a_killed_leader(stack, report):
    leader = await _leader(stack)
    load = Load(stack.api_urls, workers=12, total=1_200, seed=5, ryw=True)
    writing = asyncio.create_task(load.run())
    await load.wait_acked(300)
    kill9(stack.projector(leader))
    killed = time.monotonic()
    successor = await _leader(stack)
    took_over = time.monotonic() - killed
    await writing

    reads = [w for w in load.writes if w.read_status is not None]
    stale = [w for w in reads if w.read_status == 404]
    log = await check_log([stack.url], load)
    views = await views_match_rebuild([stack.url], load)
    figures = {
        **log_figures(log, load),
        "reads_on_the_other_replica": len(reads),
        "read_statuses": statuses_of(reads),
        "stale_reads_404": len(stale),
        "faults_injected": "1 x kill -9 of the leading projector (of 2)",
        "standby_took_over_after_s": round(took_over, 2),
        **views,
    }
    report(figures)
    assert successor != leader
    assert took_over < 10, figures  # lease ttl 5 s, plus polling
    assert set(statuses(load.writes)) == {"200"}, figures  # writes never need the projector
    # Reads may wait out the takeover (503 after read_wait_timeout), never see stale data.
    assert stale == [] and {w.read_status for w in reads} <= {200, 503}, figures
    assert log.missing == [], log.missing[:5]
    assert views["keys_differing_from_rebuild"] == 0, figures
    assert views["acked_missing_from_views"] == 0, figures


def statuses_of(reads: list) -> dict[str, int]:
    counts: dict[str, int] = {}
    for w in reads:
        counts[str(w.read_status)] = counts.get(str(w.read_status), 0) + 1
    return dict(sorted(counts.items()))
