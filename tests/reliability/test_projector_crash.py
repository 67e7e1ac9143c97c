"""kill -9 of the projector in the middle of 5,000 appends through the HTTP API."""

import asyncio
import time
from collections import Counter

import httpx
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

APPENDS = 5_000
KILL_AT = (1_500, 3_500)  # acknowledged writes at which the projector is killed


async def test_projector_killed_twice_during_5000_appends(tmp_path, report):
    with nats_server(tmp_path / "nats") as url:
        projector = Service(["projector", "--nats-url", url], tmp_path / "projector.log").start()
        api, api_url = api_process(url, tmp_path / "api.log")
        try:
            await asyncio.to_thread(api.wait_http, api_url, "/readyz")
            load = Load([api_url], workers=16, total=APPENDS, seed=1)
            reads: Counter[str] = Counter()
            writing = asyncio.create_task(load.run())
            reading = asyncio.create_task(_read_while(load, api_url, writing, reads))
            takeovers = []
            for at in KILL_AT:
                await load.wait_acked(at)
                kill9(projector)
                await asyncio.sleep(0.5)
                projector = Service(
                    ["projector", "--nats-url", url], tmp_path / "projector.log"
                ).start()
                killed = time.monotonic()
                assert projector.process is not None
                while await lease_holder_pid([url]) != projector.process.pid:
                    assert time.monotonic() - killed < 30, "the new projector never took over"
                    await asyncio.sleep(0.2)
                takeovers.append(round(time.monotonic() - killed, 2))
            await writing
            await reading
            log = await check_log([url], load)
            views = await views_match_rebuild([url], load)
            figures = {
                **log_figures(log, load),
                "read_statuses": dict(reads),
                "faults_injected": f"{len(KILL_AT)} x kill -9 of the projector",
                "restarted_projector_took_over_after_s": takeovers,
                **views,
            }
            report(figures)
            assert len(load.writes) == APPENDS
            assert set(statuses(load.writes)) <= {"200", "503"}, figures
            assert set(reads) <= {"200", "503"}, figures
            assert log.missing == [], log.missing[:5]
            assert views["keys_differing_from_rebuild"] == 0, figures
            assert views["acked_missing_from_views"] == 0, figures
        finally:
            api.stop()
            projector.stop()


async def _read_while(
    load: Load, api_url: str, writing: asyncio.Task[None], seen: Counter[str]
) -> None:
    """Reads alongside the writes: with the projector dead they wait, then answer 503."""
    async with httpx.AsyncClient(timeout=30) as http:

        async def reader() -> None:
            while not writing.done():
                if not load.convs:
                    await asyncio.sleep(0.05)
                    continue
                conv = load.rng.choice(load.convs)
                try:
                    r = await http.get(f"{api_url}/v1/conversations/{conv}/items")
                    seen[str(r.status_code)] += 1
                except httpx.HTTPError as exc:
                    seen[f"error:{type(exc).__name__}"] += 1
                await asyncio.sleep(0.05)

        await asyncio.gather(reader(), reader())
