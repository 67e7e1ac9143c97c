"""kill -9 of nats-server under load, then a restart on the same port and data."""

import asyncio
import time

import pytest

from convstore.embedded_nats import EmbeddedNats
from tests.reliability.harness import Load, check_log, log_figures, statuses, views_match_rebuild
from tests.servers import Service, api_process

pytestmark = pytest.mark.reliability

FAST = 2.0  # a request started during the outage must be answered within this
# A request already waiting for its PubAck when the server died waits out the request
# timeout (CONVSTORE_REQUEST_TIMEOUT, 5 s): nats-py does not fail pending requests on a
# disconnect. Bounded, not a hang.
REQUEST_TIMEOUT = 5.0
# The server stays down longer than that timeout, so writers whose requests were stranded
# at the kill come back and start new requests while it is still down (with a shorter
# outage, all 8 writers can sit out the whole outage inside stranded requests).
OUTAGE = REQUEST_TIMEOUT + 3.0


async def test_nats_killed_under_load_then_restarted(tmp_path, report):
    # The embedded server's production setting: fsync before every ack.
    nats = EmbeddedNats(tmp_path / "nats", sync_always=True)
    nats.start()
    url = nats.url
    projector = Service(["projector", "--nats-url", url], tmp_path / "projector.log").start()
    api, api_url = api_process(url, tmp_path / "api.log")
    try:
        await asyncio.to_thread(api.wait_http, api_url, "/readyz")
        load = Load([api_url], workers=8, seed=2)
        writing = asyncio.create_task(load.run())
        await load.wait_acked(400)
        assert nats.process is not None
        nats.process.kill()  # SIGKILL: no flush, no goodbye
        nats.process.wait()
        killed = time.monotonic()
        await asyncio.sleep(OUTAGE)
        nats.start()  # same port, same data dir
        restarted = time.monotonic()
        acked_before = load.acked_count()
        await load.wait_acked(acked_before + 400, timeout=60)
        load.stop.set()
        await writing

        in_flight = [w for w in load.writes if w.started < killed < w.ended]
        during = [w for w in load.writes if killed <= w.started < restarted]
        after = [w for w in load.writes if w.started >= restarted]
        first_ok = min((w.ended for w in after if w.acked), default=None)
        log = await check_log([url], load)
        views = await views_match_rebuild([url], load)
        figures = {
            **log_figures(log, load),
            "faults_injected": f"1 x kill -9 of nats-server, restarted after {OUTAGE:.0f} s",
            "in_flight_at_kill": statuses(in_flight),
            "in_flight_at_kill_max_s": round(max((w.elapsed for w in in_flight), default=0), 3),
            "started_during_outage": statuses(during),
            "started_during_outage_max_s": round(max((w.elapsed for w in during), default=0), 3),
            "first_2xx_after_restart_s": round(first_ok - restarted, 2) if first_ok else None,
            **views,
        }
        report(figures)
        assert during and all(w.status == 503 for w in during), figures
        assert max(w.elapsed for w in during) < FAST, figures
        assert all(w.status in (200, 503) for w in in_flight), figures
        assert all(w.elapsed < REQUEST_TIMEOUT + FAST for w in in_flight), figures
        assert set(statuses(load.writes)) <= {"200", "503"}, figures
        assert first_ok is not None, "the API did not recover by itself"
        assert log.missing == [], log.missing[:5]
        assert views["keys_differing_from_rebuild"] == 0, figures
        assert views["acked_missing_from_views"] == 0, figures
    finally:
        api.stop()
        projector.stop()
        nats.stop()
