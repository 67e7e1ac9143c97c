"""Smoke test of the benchmark harness: `python -m bench --quick` starts its own servers,
runs every workload, and writes the JSON and the chart, within three minutes (about half
a minute on an idle machine; the shared one runs other people's tests meanwhile).

It checks that the harness works and that its figures are there, not the figures
themselves (the targets are reported by the benchmark, not enforced), except for stale
reads, which must be 0 on any machine. Needs the `bench` extra (matplotlib, psutil).
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="needs the bench extra: pip install -e '.[bench]'")
pytest.importorskip("psutil", reason="needs the bench extra: pip install -e '.[bench]'")

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {"append", "visibility", "list", "responses", "rebuild", "memory"}


def test_quick_benchmark_writes_every_workloads_figures(tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--durability",
            "default",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert run.returncode == 0, run.stderr[-4000:]

    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["quick"] is True
    assert results["environment"]["cpu_count"] and results["environment"]["nats_server"]
    assert list(results["modes"]) == ["default"]
    mode = results["modes"]["default"]
    assert mode["sync_always"] is False
    assert mode["errors"] == {}
    assert set(mode["workloads"]) == WORKLOADS

    base = mode["baseline"]
    assert base["publish_sequential"]["p50_ms"] > 0
    assert base["publish_concurrent"]["per_second"] > 0

    w = mode["workloads"]
    sizes = results["sizes"]
    assert w["append"]["one_at_a_time"]["latency"]["n"] == sizes["sequential"]
    assert w["append"]["in_flight"]["per_second"] > 0
    assert w["append"]["in_flight"]["errors"] == 0
    # Both clients when wrk is installed (.ci/run installs it): the faster one counts.
    clients = [w["append"]["in_flight"], w["append"]["in_flight"].get("other_client") or {}]
    if shutil.which("wrk"):
        assert sorted(c.get("client", "") for c in clients) == ["python", "wrk"]
        assert clients[0]["per_second"] >= clients[1]["per_second"] > 0
        assert all(c["errors"] == 0 and c["latency"]["n"] > 0 for c in clients)
    else:
        assert clients[0]["client"] == "python" and not clients[1]
    floor = w["append"]["http_floor"]
    assert floor["one_at_a_time"]["latency"]["n"] == sizes["sequential"]
    assert floor["one_at_a_time_httpx"]["latency"]["n"] == sizes["sequential"]
    assert floor["in_flight"]["per_second"] > 0 and floor["in_flight"]["errors"] == 0
    assert w["visibility"]["stale_reads"] == 0
    assert w["visibility"]["pair_latency"]["p99_ms"] > 0
    small, large = w["list"]["sizes"]
    for kind in ("desc_limit20", "asc_after_paged"):
        assert w["list"][kind][str(small)]["p50_ms"] > 0
        assert w["list"][kind][str(large)]["p50_ms"] > 0
        assert w["list"][kind]["p50_ratio_large_to_small"] > 0
    assert w["list"]["short_pages"] == 0
    assert w["rebuild"]["rebuild"]["events"] == sizes["rebuild_events"]
    assert w["rebuild"]["rebuild"]["per_second"] > 0
    # timed to the flip; the whole command also waits 2.5 s before it drops the old views
    rb = w["rebuild"]["rebuild"]
    assert rb["with_retirement_seconds"] >= rb["seconds"] + 2.5
    assert w["rebuild"]["raw_ordered_consumer"]["events"] == sizes["rebuild_events"]
    assert w["memory"]["conversations"] == sizes["memory_conversations"]
    assert w["memory"]["rss_after_mb"]["serve"] > 0
    # every API process serve ran is measured (serve itself, then api2, api3, ...)
    api_processes = results["environment"]["api_processes"]
    assert api_processes == mode["api_processes"] >= 1
    assert {f"api{n}" for n in range(2, api_processes + 1)} <= set(w["memory"]["rss_after_mb"])
    assert set(w["append"]["in_flight"]["cpu"]) >= {"serve", "projector", "worker"}
    r = w["responses"]
    for series in ("conversation", "no_conversation"):
        assert r[series]["first_delta"]["n"] == sizes["responses"]
        assert 0 < r[series]["first_delta"]["p50_ms"] <= r[series]["completed"]["p50_ms"]
        assert r[series]["responses_without_text_delta"] == 0
        assert r[series]["deltas_median"] == r["raw_flow"]["deltas"]
        assert r[series]["segments"]["responses_traced"] == sizes["responses"]
    chain = r["chain"]
    assert chain["first_delta"]["n"] == sizes["responses"]
    assert chain["depth"] == [sizes["responses"], 2 * sizes["responses"] - 1]
    assert 0 < chain["first_delta"]["p50_ms"] <= chain["completed"]["p50_ms"]
    assert r["in_flight"]["per_second"] > 0 and r["in_flight"]["errors"] == 0
    assert r["raw_flow"]["first_delta"]["p50_ms"] > 0
    assert r["raw_flow"]["in_flight"]["per_second"] > 0
    assert r["store_overhead_p50_ms"] == r["conversation"]["first_delta"]["p50_ms"]

    names = [t["name"] for t in mode["targets"]]
    assert len(names) == 10
    overhead = next(t for t in mode["targets"] if "first delta" in t["name"])
    assert overhead["measured"] == r["store_overhead_p50_ms"]
    assert all(t["passed"] in (True, False, None) for t in mode["targets"])
    append_targets = [t for t in mode["targets"] if "append" in t["name"]]
    assert [t["reachable"] in (True, False) for t in append_targets] == [True, True]

    png = tmp_path / "latency.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000

    assert "targets:" in run.stdout
    assert "response, on a conversation" in run.stdout
    assert "HTTP floor: GET /healthz" in run.stdout
    assert "through httpx p50 / p99" in run.stdout
    assert "CPU µs/append, serial" in run.stdout and "CPU µs/append, 64" in run.stdout


def _probe(module: str) -> subprocess.CompletedProcess[str]:
    """Run one of the benchmark's probes briefly (30 requests per figure); it must succeed."""
    out = subprocess.run(
        [sys.executable, "-m", module, "-n", "30"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 0, out.stderr
    return out


def test_the_nats_cost_probe_reports_its_four_figures() -> None:
    """`python -m bench.nats_costs` (bench/README.md, "Session 8 changes") runs on its own
    nats-server and prints each figure, and the per-message gap it derives."""
    out = _probe("bench.nats_costs")
    rows = [line.split() for line in out.stdout.splitlines() if " p50 " in line]
    figures = {row[0]: float(row[2]) for row in rows}
    assert set(figures) == {
        "ping_pong_us",
        "direct_get_one_key_us",
        "page_22_keys_nats_py_us",
        "page_22_keys_bare_socket_us",
    }
    assert all(value > 0 for value in figures.values())
    assert "nats-py per message of the page" in out.stdout


def test_the_persist_mode_probe_reports_both_buckets_under_both_settings() -> None:
    """`python -m bench.persist_modes` (bench/HISTORY.md, "Session 12 changes") makes a
    fsynced and an async bucket on a server of each fsync setting and times both."""
    out = _probe("bench.persist_modes")
    rows = {
        line.split(" / ")[0] + " / " + line.split(" / ")[1].split()[0]: line.split()[-4:]
        for line in out.stdout.splitlines()[1:]
    }
    assert set(rows) == {
        "sync_interval: always / fsynced",
        "sync_interval: always / async",
        "default fsync / fsynced",
        "default fsync / async",
    }
    assert all(float(v) > 0 for figures in rows.values() for v in figures)


def test_the_rebuild_panel_draws_rates_from_zero_with_each_modes_target() -> None:
    """The target is a ratio of two rates, so the bars start at zero on a linear axis and
    each mode's line sits at half its raw ordered read, with the rebuild's ratio written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.report import _draw_rates

    rates = {
        mode: {
            "raw ordered consumer": raw,
            "raw pull consumer (256)": 15_000.0,
            "fold into memory": 19_000.0,
            "rebuild into KV": rebuild,
        }
        for mode, raw, rebuild in (("always", 44_000.0, 17_600.0), ("default", 28_000.0, 19_600.0))
    }
    fig, ax = plt.subplots()
    try:
        _draw_rates(ax, rates)
        assert ax.get_xscale() == "linear"
        assert ax.get_xlim()[0] == 0
        assert sorted(line.get_xdata()[0] for line in ax.lines) == [14_000.0, 22_000.0]
        assert sorted(text.get_text() for text in ax.texts) == ["0.40 of raw", "0.70 of raw"]
    finally:
        plt.close(fig)
