"""A three-node JetStream cluster: kill -9 of the stream leader during 2,000 appends."""

import asyncio
import re
import subprocess
import time
from typing import Any

import nats.errors
import pytest
import yaml

from convstore.embedded_nats import nats_server_binary
from events.connection import connect
from events.subjects import STREAM_NAME
from tests.reliability.cluster import NatsCluster
from tests.reliability.harness import Load, check_log, log_figures, statuses, views_match_rebuild
from tests.servers import ROOT, Service, free_port

pytestmark = pytest.mark.reliability

APPENDS = 2_000
KILL_AT = 600  # acknowledged writes when the stream leader is killed


async def _stream_info(js: Any, stream: str, within: float = 30.0) -> Any:
    """The stream's info once it has a leader: right after the kill, a stream whose leader
    was on the killed node answers nothing until the survivors elect one."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await js.stream_info(stream)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def _replicas_and_leader(urls: list[str]) -> tuple[dict[str, int], str]:
    """Replicas of the stream and the KV buckets, and the stream's leader node."""
    nc = await connect(urls, "cluster-info")
    try:
        js = nc.jetstream(timeout=5)
        replicas = {}
        for stream in (STREAM_NAME, "KV_convstore_views", "KV_convstore_meta"):
            info = await _stream_info(js, stream)
            replicas[stream] = info.config.num_replicas or 1
            if stream == STREAM_NAME:
                assert info.cluster is not None and info.cluster.leader
                leader = info.cluster.leader
        return replicas, leader
    finally:
        await nc.close()


async def test_stream_leader_killed_during_2000_appends(tmp_path, report):
    cluster = NatsCluster(tmp_path / "cluster")
    cluster.start()
    serve = None
    try:
        await cluster.wait_jetstream()
        port = free_port()
        nats_urls = ",".join(cluster.urls)  # several URLs: the client fails over between them
        args = ["serve", "--nats-url", nats_urls, "--replicas", "3", "--port", str(port)]
        serve = Service(args, tmp_path / "serve.log").start()
        url = f"http://127.0.0.1:{port}"
        await asyncio.to_thread(serve.wait_http, url, "/readyz", 60)
        replicas, leader = await _replicas_and_leader(cluster.urls)

        # a client backing off 0.3 s after a 503, so the failover spends few of the attempts
        load = Load([url], workers=8, total=APPENDS, seed=3, pause_after_failure=0.3)
        writing = asyncio.create_task(load.run())
        await load.wait_acked(KILL_AT)
        victim = cluster.nodes[leader].process
        assert victim is not None
        victim.kill()  # SIGKILL the stream leader
        victim.wait()
        killed = time.monotonic()
        await writing

        survivors = cluster.alive_urls()
        _, new_leader = await _replicas_and_leader(survivors)
        after = [w for w in load.writes if w.started >= killed]
        first_ok = min((w.ended for w in after if w.acked), default=None)
        log = await check_log(survivors, load)
        views = await views_match_rebuild(survivors, load)
        figures = {
            **log_figures(log, load),
            "faults_injected": f"1 x kill -9 of the stream leader ({leader}) of 3 nodes",
            "replicas": replicas,
            "new_stream_leader": new_leader,
            "started_after_kill": statuses(after),
            "first_2xx_after_kill_s": round(first_ok - killed, 2) if first_ok else None,
            "slowest_request_s": round(max(w.elapsed for w in load.writes), 2),
            **views,
        }
        report(figures)
        assert replicas == {s: 3 for s in replicas}, figures
        assert new_leader != leader
        assert set(statuses(load.writes)) <= {"200", "503"}, figures
        assert sum(w.acked for w in after) >= 300, "writes did not go on after the failover"
        assert log.missing == [], log.missing[:5]
        assert views["keys_differing_from_rebuild"] == 0, figures
        assert views["acked_missing_from_views"] == 0, figures
    finally:
        if serve:
            serve.stop()
        cluster.stop()


def test_compose_cluster_profile_is_consistent():
    """docker-compose cannot run here (no Docker engine): check that the file parses,
    that the cluster profile wires three routed nodes to the API and projectors, and
    that the real nats-server accepts the cluster config (`-t`: test config, exit)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    cluster = {name for name, s in services.items() if "cluster" in s.get("profiles", [])}
    nodes = {f"nats-{i}" for i in (1, 2, 3)}
    assert cluster == nodes | {"api-cluster", "projector-cluster", "worker-cluster"}
    assert not any(s.get("profiles") for n, s in services.items() if n not in cluster)

    conf = ROOT / "deploy" / "nats-cluster.conf"
    routes = set(re.findall(r"nats-route://([\w-]+):6222", conf.read_text()))
    assert routes == nodes
    for node in nodes:
        assert services[node]["command"][-2:] == ["--name", node]
        assert "./deploy/nats-cluster.conf:/etc/nats/nats.conf:ro" in services[node]["volumes"]
        checked = subprocess.run(
            [nats_server_binary(), "-t", "-c", str(conf), "--name", node],
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stderr
    for name in ("api-cluster", "projector-cluster", "worker-cluster"):
        env = services[name]["environment"]
        assert sorted(env["CONVSTORE_NATS_URL"].split(",")) == sorted(
            f"nats://{n}:4222" for n in nodes
        )
        assert env["CONVSTORE_REPLICAS"] == "3"
        assert set(services[name]["depends_on"]) == nodes
    assert services["projector-cluster"]["deploy"]["replicas"] == 2
