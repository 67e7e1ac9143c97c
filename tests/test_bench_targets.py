"""The benchmark's verdicts judged from figures: what the HTTP floor makes reachable."""

from typing import Any

from bench.report import cpu_ms, cpu_per_op
from bench.targets import evaluate


def mode(floor_p50: float, floor_rate: float) -> dict[str, Any]:
    return {
        "baseline": {
            "publish_sequential": {"p50_ms": 0.4},
            "publish_concurrent": {"per_second": 10_000.0},
        },
        "workloads": {
            "append": {
                "one_at_a_time": {"latency": {"p50_ms": 3.0}},
                "in_flight": {"per_second": 1_000.0},
                "http_floor": {
                    "one_at_a_time": {"latency": {"p50_ms": floor_p50}},
                    "in_flight": {"per_second": floor_rate},
                },
            }
        },
    }


def append_verdicts(floor_p50: float, floor_rate: float) -> tuple[Any, Any]:
    verdicts = evaluate(mode(floor_p50, floor_rate))
    return verdicts[0], verdicts[1]


def test_a_floor_above_the_target_makes_it_out_of_reach() -> None:
    one, many = append_verdicts(floor_p50=0.9, floor_rate=2_000.0)
    assert one.passed is False and one.reachable is False
    assert "3.25x raw" in one.detail
    assert "out of reach" in one.detail
    assert many.passed is False and many.reachable is False
    assert "0.200x raw" in many.detail and "out of reach" in many.detail


def test_a_floor_below_the_target_leaves_it_reachable() -> None:
    one, many = append_verdicts(floor_p50=0.3, floor_rate=6_000.0)
    assert one.passed is False and one.reachable is True
    assert "1.75x raw" in one.detail and "out of reach" not in one.detail
    assert many.passed is False and many.reachable is True


def test_without_a_floor_reachability_is_unknown() -> None:
    figures = mode(0.3, 6_000.0)
    del figures["workloads"]["append"]["http_floor"]
    one, many = evaluate(figures)[:2]
    assert one.reachable is None and many.reachable is None
    assert one.detail == "" and many.detail == ""


def test_the_list_target_is_judged_against_the_floor_too() -> None:
    figures = mode(2.5, 6_000.0)
    figures["workloads"]["list"] = {
        "sizes": [100, 10_000],
        "desc_limit20": {"100": {"p50_ms": 3.0}, "10000": {"p50_ms": 3.1}},
    }
    (verdict,) = [v for v in evaluate(figures) if v.name.startswith("list p50")]
    assert verdict.passed is False and verdict.reachable is False
    assert verdict.detail == (
        "desc_limit20 @10000; floor: GET /healthz p50 2.50 ms, out of reach on this HTTP stack"
    )


def test_cpu_per_append_sums_the_api_processes_and_skips_idle_ones() -> None:
    cpu = {"client": 0.2, "serve": 0.5, "api2": 0.3, "nats-server": 0.4, "worker": 0.0}
    assert cpu_per_op(cpu, 2_000.0) == "client 100 + API 400 + nats-server 200 = 700"


def test_cpu_per_response_sums_the_api_processes_and_skips_idle_ones() -> None:
    per = {"client": 1.04, "serve": 0.04, "api2": 3.24, "nats-server": 6.34, "worker": 0.01}
    assert cpu_ms(per) == "client 1.0 + API 3.3 + nats-server 6.3 = 10.7"


def test_the_table_shows_each_serial_series_cpu_per_response() -> None:
    import json
    from pathlib import Path

    from bench.report import table

    run = Path(__file__).resolve().parent.parent / "bench" / "reference" / "full-run-19.json"
    rows = [r for r in table(json.loads(run.read_text())).splitlines() if "CPU ms/response" in r]
    assert len(rows) == 4  # on a conversation and without one, in both modes
    assert "nats-server 6.3 + projector 3.8 + worker 3.6 = 18.2" in rows[0]
