"""The issue's targets, judged within one durability mode (the baseline ran on the same
server as the workload). A target whose figure is missing (e.g. a baseline ratio with
--target, where there is no baseline) is reported as n/a, not as a pass."""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench.stats import ratio
from bench.workloads.memory import convstore_growth


@dataclass(frozen=True)
class Verdict:
    name: str
    measured: float | None
    limit: float
    unit: str  # "x" for ratios, "ms", "MB", "reads"
    passed: bool | None  # None: not measured
    detail: str = ""
    # False: even the HTTP floor (GET /healthz, no store work) misses the target, so no
    # store behind this HTTP stack could meet it; None: not known.
    reachable: bool | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def status(self) -> str:
        return "n/a" if self.passed is None else ("PASS" if self.passed else "FAIL")


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _judge(
    name: str, measured: float | None, limit: float, unit: str, ok: Callable[[float], bool]
) -> Verdict:
    if measured is None:
        return Verdict(name, None, limit, unit, None)
    return Verdict(name, round(measured, 3), limit, unit, ok(measured))


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a + b


def _floored(
    verdict: Verdict, best: float | None, ok: Callable[[float], bool], say: Callable[[float], str]
) -> Verdict:
    """`verdict` with what the HTTP floor allows: `best` is the figure a store costing
    nothing would reach behind this HTTP stack; `ok` is the target's own test."""
    if best is None or verdict.passed is None:
        return verdict
    reachable = ok(best)
    note = f"floor: {say(best)}" + ("" if reachable else ", out of reach on this HTTP stack")
    if verdict.detail:
        note = f"{verdict.detail}; {note}"
    return Verdict(**{**verdict.as_dict(), "detail": note, "reachable": reachable})


def evaluate(mode: dict[str, Any]) -> list[Verdict]:
    """Every target of the issue for one mode's figures."""
    w = mode.get("workloads", {})
    base = mode.get("baseline", {})
    raw_p50 = _get(base, "publish_sequential", "p50_ms")
    raw_rate = _get(base, "publish_concurrent", "per_second")
    floor = _get(w, "append", "http_floor") or {}
    verdicts = [
        _floored(
            _judge(
                "one-at-a-time append p50 <= 2x raw publish p50",
                ratio(_get(w, "append", "one_at_a_time", "latency", "p50_ms"), raw_p50),
                2.0,
                "x",
                lambda r: r <= 2.0,
            ),
            # The best an append could do: the floor's round trip plus one raw publish.
            ratio(_sum(_get(floor, "one_at_a_time", "latency", "p50_ms"), raw_p50), raw_p50),
            lambda r: r <= 2.0,
            lambda best: f"GET /healthz p50 + raw publish p50 = {best:.2f}x raw",
        ),
        _floored(
            _judge(
                "64-in-flight append throughput >= 25% of raw 64-in-flight publish",
                ratio(_get(w, "append", "in_flight", "per_second"), raw_rate),
                0.25,
                "x",
                lambda r: r >= 0.25,
            ),
            ratio(_get(floor, "in_flight", "per_second"), raw_rate),
            lambda r: r >= 0.25,
            lambda best: f"GET /healthz at the same concurrency = {best:.3f}x raw",
        ),
        _judge("0 stale reads", _get(w, "visibility", "stale_reads"), 0, "reads", lambda n: n == 0),
        _judge(
            "visibility (write->read pair) p99 <= 5 ms",
            _get(w, "visibility", "pair_latency", "p99_ms"),
            5.0,
            "ms",
            lambda ms: ms <= 5.0,
        ),
    ]
    listing = w.get("list") or {}
    small, large = listing.get("sizes", [100, 10_000])
    for kind, label in (("desc_limit20", "limit=20 desc"), ("asc_after_paged", "after= asc")):
        verdicts.append(
            _judge(
                f"list {label} p50 at {large:,} items <= 1.2x p50 at {small:,}",
                _get(listing, kind, "p50_ratio_large_to_small"),
                1.2,
                "x",
                lambda r: r <= 1.2,
            )
        )
    p50s = {
        f"{kind} @{size}": _get(listing, kind, str(size), "p50_ms")
        for kind in ("desc_limit20", "asc_after_paged")
        for size in (small, large)
    }
    measured = {k: v for k, v in p50s.items() if v is not None}
    worst = max(measured, key=lambda k: measured[k]) if measured else None
    verdict = _judge(
        "list p50 <= 2 ms (worst of both page kinds and sizes)",
        measured[worst] if worst else None,
        2.0,
        "ms",
        lambda ms: ms <= 2.0,
    )
    verdict = Verdict(**{**verdict.as_dict(), "detail": worst or ""})
    verdicts.append(
        _floored(
            verdict,
            _get(floor, "one_at_a_time", "latency", "p50_ms"),
            lambda ms: ms <= 2.0,
            lambda best: f"GET /healthz p50 {best:.2f} ms",
        )
    )
    verdicts.append(
        _judge(
            "rebuild >= 50% of the raw ordered-consumer read rate",
            ratio(
                _get(w, "rebuild", "rebuild", "per_second"),
                _get(w, "rebuild", "raw_ordered_consumer", "per_second"),
            ),
            0.5,
            "x",
            lambda r: r >= 0.5,
        )
    )
    verdicts.append(_memory(w.get("memory")))
    verdicts.append(_responses(w.get("responses")))
    return verdicts


def _responses(responses: dict[str, Any] | None) -> Verdict:
    """Time to the first delta on a conversation, with the echo provider (no model time):
    all of it is the store's. None with --target, whose model's time is in the figure."""
    name = "store overhead on a response <= 5 ms p50 to the first delta"
    overhead = _get(responses or {}, "store_overhead_p50_ms")
    verdict = _judge(name, overhead, 5.0, "ms", lambda ms: ms <= 5.0)
    raw = _get(responses or {}, "raw_flow", "first_delta", "p50_ms")
    r = ratio(overhead, raw)
    if r is None:
        return verdict
    return Verdict(**{**verdict.as_dict(), "detail": f"{r:.1f}x the raw flow's {raw:.2f} ms"})


MEMORY_MIN = 10_000  # conversations below which the memory growth is not judged


def _memory(memory: dict[str, Any] | None) -> Verdict:
    name = "convstore RSS growth (API, projector, worker) <= 50 MB for 100,000 conversations"
    if not memory or "rss_growth_mb" not in memory:
        return Verdict(name, None, 50.0, "MB", None)
    count = memory["conversations"]
    growth = convstore_growth(memory["rss_growth_mb"])
    if count >= 100_000:
        return Verdict(name, growth, 50.0, "MB", growth <= 50.0, f"measured on {count:,}")
    scaled = memory["serve_growth_per_100k_mb"]
    detail = f"{growth} MB on {count:,} conversations, scaled linearly to 100,000"
    if count < MEMORY_MIN:
        # A few hundred KB of allocator noise scaled up 100x is not a finding.
        return Verdict(name, scaled, 50.0, "MB", None, f"{detail}: too few to judge")
    return Verdict(name, scaled, 50.0, "MB", scaled <= 50.0, detail)
