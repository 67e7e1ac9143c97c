"""The three outputs: a table on stdout, results/latest.json and results/latency.png.

The table puts each figure beside the raw JetStream figure it is judged against, with
the ratio; the targets follow with PASS/FAIL and the measured value. The JSON keeps
every figure (latency series as p50/p90/p99 and a 101-point CDF), the targets and the
environment; the chart draws those CDFs, one panel per workload, one line style per
durability mode.
"""

import json
import math
from pathlib import Path
from typing import Any

from bench.targets import Verdict


def _ms(summary: dict[str, Any] | None) -> str:
    if not summary or not summary.get("n"):
        return "-"
    return f"{summary['p50_ms']:.2f} / {summary['p99_ms']:.2f} ms"


def _n(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}{unit}" if value >= 100 else f"{value:,.2f}{unit}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}x"


def _rows(mode: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(workload, figure, convstore, baseline, ratio) rows of one mode."""
    w, base = mode.get("workloads", {}), mode.get("baseline") or {}
    rows: list[tuple[str, str, str, str, str]] = []
    seq, con = base.get("publish_sequential"), base.get("publish_concurrent") or {}
    if "append" in w:
        one, many = w["append"]["one_at_a_time"], w["append"]["in_flight"]
        r1 = _ratio(one["latency"].get("p50_ms"), (seq or {}).get("p50_ms"))
        rows.append(("append, one at a time", "p50 / p99", _ms(one["latency"]), _ms(seq), _x(r1)))
        r2 = _ratio(many["per_second"], con.get("per_second"))
        rows.append(
            (
                f"append, {many['in_flight']} in flight",
                "throughput",
                f"{_n(many['per_second'])} req/s",
                f"{_n(con.get('per_second'))} msg/s" if con else "-",
                _x(r2),
            )
        )
        rows.append(("", "p50 / p99", _ms(many["latency"]), _ms(con.get("latency")), ""))
        procs = f"{many['processes']} proc, CPU {many['client_cpu']}"
        if many.get("client") == "wrk":
            procs = f"wrk, CPU {many['client_cpu_max']}"
        base_procs = f"{con.get('processes')} proc, CPU {con.get('client_cpu')}" if con else "-"
        rows.append(("", "load client", procs, base_procs, ""))
        one_rate = 1000 / one["latency"]["mean_ms"] if one["latency"].get("mean_ms") else None
        for label, run, rate in (
            ("CPU µs/append, serial", one, one_rate),
            (f"CPU µs/append, {many['in_flight']}", many, many["per_second"]),
        ):
            if run.get("cpu") and rate:
                rows.append(("", label, cpu_per_op(run["cpu"], rate), "", ""))
        other = many.get("other_client")
        if other:
            name = "wrk" if other.get("client") == "wrk" else "Python client"
            rows.append(
                (
                    "",
                    f"with the {name}",
                    f"{_n(other['per_second'])} req/s",
                    "",
                    _x(_ratio(other["per_second"], con.get("per_second"))),
                )
            )
        floor = w["append"].get("http_floor")
        if floor:
            lat, rate = floor["one_at_a_time"]["latency"], floor["in_flight"]["per_second"]
            r3 = _ratio(lat.get("p50_ms"), (seq or {}).get("p50_ms"))
            rows.append(("HTTP floor: GET /healthz", "p50 / p99", _ms(lat), _ms(seq), _x(r3)))
            if "one_at_a_time_httpx" in floor:
                heavy = floor["one_at_a_time_httpx"]["latency"]
                rows.append(("", "through httpx p50 / p99", _ms(heavy), "", ""))
            r4 = _ratio(rate, con.get("per_second"))
            rows.append(("", "throughput", f"{_n(rate)} req/s", "", _x(r4)))
    if "visibility" in w:
        v = w["visibility"]
        rows.append(
            ("write->read visibility", "stale reads", f"{v['stale_reads']} of {v['pairs']}", "", "")
        )
        rows.append(("", "pair p50 / p99", _ms(v["pair_latency"]), "", ""))
        rows.append(("", "read p50 / p99", _ms(v["read_latency"]), "", ""))
    if "list" in w:
        lst = w["list"]
        small, large = lst["sizes"]
        for kind, label in (
            ("desc_limit20", "list limit=20 desc"),
            ("asc_after_paged", "list after= asc"),
        ):
            rows.append((label, f"{small:,} items", _ms(lst[kind][str(small)]), "", ""))
            rows.append(
                (
                    "",
                    f"{large:,} items",
                    _ms(lst[kind][str(large)]),
                    f"vs {small:,}",
                    _x(lst[kind]["p50_ratio_large_to_small"]),
                )
            )
    if "rebuild" in w:
        rb = w["rebuild"]
        raw = rb["raw_ordered_consumer"]
        rows.append(
            (
                f"rebuild, {rb['log']['events']:,} events",
                "events/s, to views live",
                _n(rb["rebuild"]["per_second"])
                + (
                    f" ({shards} processes)"
                    if (shards := rb["rebuild"].get("shards", 1)) > 1
                    else ""
                ),
                f"{_n(raw['per_second'])} (ordered consumer)",
                _x(_ratio(rb["rebuild"]["per_second"], raw["per_second"])),
            )
        )
        retired = rb["rebuild"].get("with_retirement_per_second")
        if retired is not None:  # runs before session 11 timed the whole command only
            rows.append(("", "incl. old generation dropped", _n(retired), "", ""))
        rows.append(("", "fold phase only", _n(rb["rebuild"]["fold_phase_per_second"]), "", ""))
        rows.append(
            (
                "",
                "fold into memory",
                _n(rb["fold_into_memory"]["per_second"]),
                _n(rb["raw_pull_consumer_256"]["per_second"]) + " (pull, 256)",
                "",
            )
        )
        rows.append(("", "log fill (EventStore)", _n(rb["log"]["per_second"]), "", ""))
    if "memory" in w:
        m = w["memory"]
        for proc in m["rss_growth_mb"]:
            rows.append(
                (
                    f"memory, {m['conversations']:,} conversations" if proc == "serve" else "",
                    f"{proc} RSS",
                    f"{m['rss_before_mb'][proc]} -> {m['rss_after_mb'][proc]} MB "
                    f"(+{m['rss_growth_mb'][proc]})",
                    "",
                    "",
                )
            )
        rows.append(
            (
                "",
                "create, folded /s",
                f"{_n(m['create_per_second'])}, {_n(m['created_and_folded_per_second'])}",
                "",
                "",
            )
        )
    if "responses" in w:
        rows.extend(_response_rows(w["responses"]))
    return rows


def _response_rows(r: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """Streamed responses beside the raw flow (the least NATS work of the same thing)."""
    raw = r.get("raw_flow") or {}
    rows: list[tuple[str, str, str, str, str]] = []
    depth = (r.get("chain") or {}).get("depth") or ["?", "?"]
    for key, label in (
        ("conversation", "on a conversation"),
        ("no_conversation", "no conversation"),
        ("chain", f"chain of {depth[0]}-{depth[1]} turns"),
    ):
        series = r.get(key)
        if series is None:
            continue  # a run from before the series existed
        name = f"response, {label}"
        if "error" in series:
            rows.append((name, "error", series["error"][:60], "", ""))
            continue
        for n, (figure, fig_label) in enumerate(
            (("first_delta", "first delta p50 / p99"), ("completed", "completed p50 / p99"))
        ):
            ours, theirs = series.get(figure), raw.get(figure)
            ratio = _ratio((ours or {}).get("p50_ms"), (theirs or {}).get("p50_ms"))
            rows.append(("" if n else name, fig_label, _ms(ours), _ms(theirs), _x(ratio)))
        accepted = (series.get("accepted") or {}).get("p50_ms")
        first = (series.get("first_event") or {}).get("p50_ms")
        if accepted is not None and first is not None:
            rows.append(("", "headers, 1st event p50", f"{accepted:.2f}, {first:.2f} ms", "", ""))
        rows.extend(_segment_rows(series.get("segments")))
        if series.get("cpu_ms_per_response"):
            rows.append(("", "CPU ms/response", cpu_ms(series["cpu_ms_per_response"]), "", ""))
    many = r.get("in_flight") or {}
    base = raw.get("in_flight") or {}
    name = f"response, {many.get('in_flight', '')} in flight"
    if "error" in many:
        rows.append((name, "error", many["error"][:60], "", ""))
    elif many:
        rows.append(
            (
                name,
                "throughput",
                f"{_n(many['per_second'])} resp/s",
                f"{_n(base.get('per_second'))} flows/s" if base else "-",
                _x(_ratio(many["per_second"], base.get("per_second"))),
            )
        )
        rows.append(("", "first delta p50 / p99", _ms(many.get("first_delta")), "", ""))
        rows.append(
            ("", "completed p50 / p99", _ms(many["completed"]), _ms(base.get("completed")), "")
        )
        procs = f"{many['processes']} proc, CPU {many['client_cpu']}"
        base_procs = f"1 proc, CPU {base.get('client_cpu')}" if base else "-"
        rows.append(("", "load client", procs, base_procs, ""))
    return rows


def _segment_rows(segments: dict[str, Any] | None) -> list[tuple[str, str, str, str, str]]:
    """The p50 of each step, from the server's stored timestamps (bench/milestones.py)."""
    if not segments:
        return []

    def steps(names: tuple[str, ...]) -> str:
        p50s = [(n, (segments.get(n) or {}).get("p50_ms")) for n in names]
        return " + ".join(f"{n} {v:.1f}" for n, v in p50s if v is not None) + " ms"

    return [
        ("", "1st delta, p50 of steps", steps(("accept", "claim", "start", "relay")), "", ""),
        ("", "then to completion", steps(("generate", "confirm", "deliver")), "", ""),
    ]


def _by_kind(values: dict[str, float]) -> dict[str, float]:
    """Per process kind: serve and the further API processes (api2, ...) are one, the API."""
    groups: dict[str, float] = {}
    for name, value in values.items():
        group = "API" if name == "serve" or name.startswith("api") else name
        groups[group] = groups.get(group, 0.0) + value
    return groups


def cpu_per_op(cpu: dict[str, float], rate: float) -> str:
    """CPU time per operation by process kind, from the busy cores measured over a run at
    `rate` operations/s: where each request's CPU goes, the cost a throughput target is
    bounded by (2 cores at 1 core-second each per second)."""
    groups = _by_kind(cpu)
    parts = [f"{k} {v / rate * 1e6:,.0f}" for k, v in groups.items() if v]
    return " + ".join(parts) + f" = {sum(groups.values()) / rate * 1e6:,.0f}"


def cpu_ms(per_response: dict[str, float]) -> str:
    """CPU ms of one response (one at a time) by process kind: how much of two cores a
    single streamed response keeps busy, which its latency shares."""
    groups = _by_kind(per_response)
    parts = [f"{k} {v:.1f}" for k, v in groups.items() if v >= 0.05]
    return " + ".join(parts) + f" = {sum(groups.values()):.1f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def table(results: dict[str, Any]) -> str:
    lines: list[str] = []
    env = results["environment"]
    lines.append(
        f"convstore benchmark  {results['date']}  {'quick' if results['quick'] else 'full'}  "
        f"{env['cpu_count']} CPUs  load {env['load_average_start']}  {env['nats_server']}"
        + (f"  {env['api_processes']} API processes" if env.get("api_processes") else "")
    )
    for note in results.get("notes", []):
        lines.append(f"note: {note}")
    header = ("workload", "figure", "convstore", "raw JetStream", "ratio")
    for name, mode in results["modes"].items():
        lines.append("")
        lines.append(f"== {name}: {mode['description']} ==")
        rows = [header, *_rows(mode)]
        widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(5)]
        widths[1] = min(widths[1], 24)
        for row in rows:
            lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        machine = mode.get("machine") or {}
        if machine:
            cores = next(iter(machine.values()))["cores"]
            busy = ", ".join(f"{k} {v['busy_cores']}" for k, v in machine.items())
            lines.append(f"machine CPU busy (of {cores} cores, all processes): {busy}")
        lines.append("")
        lines.append("targets:")
        for t in mode["targets"]:
            verdict = Verdict(**t)
            measured = "-" if verdict.measured is None else f"{verdict.measured:g}"
            unit = "" if verdict.unit == "x" or verdict.measured is None else f" {verdict.unit}"
            mark = "x" if verdict.unit == "x" and verdict.measured is not None else ""
            detail = f"  ({verdict.detail})" if verdict.detail else ""
            lines.append(f"  {verdict.status:4}  {verdict.name}: {measured}{mark}{unit}{detail}")
    return "\n".join(lines)


def write_json(results: dict[str, Any], out: Path) -> Path:
    path = out / "latest.json"
    path.write_text(json.dumps(results, indent=1) + "\n")
    return path


def _series(mode: dict[str, Any]) -> dict[str, list[tuple[str, dict[str, Any] | None]]]:
    w, base = mode.get("workloads", {}), mode.get("baseline") or {}
    panels: dict[str, list[tuple[str, dict[str, Any] | None]]] = {}
    if "append" in w:
        panels["append, one at a time"] = [
            ("convstore", w["append"]["one_at_a_time"]["latency"]),
            ("raw publish", base.get("publish_sequential")),
        ]
        panels["append, 64 in flight"] = [
            ("convstore", w["append"]["in_flight"]["latency"]),
            ("raw publish", (base.get("publish_concurrent") or {}).get("latency")),
        ]
    if "visibility" in w:
        panels["write->read visibility"] = [
            ("write+read pair", w["visibility"]["pair_latency"]),
            ("read alone", w["visibility"]["read_latency"]),
        ]
    if "list" in w:
        small, large = w["list"]["sizes"]
        for kind, label in (
            ("desc_limit20", "list limit=20 desc"),
            ("asc_after_paged", "list after= asc"),
        ):
            panels[label] = [
                (f"{small:,} items", w["list"][kind][str(small)]),
                (f"{large:,} items", w["list"][kind][str(large)]),
            ]
    if "responses" in w:
        r = w["responses"]
        raw = r.get("raw_flow") or {}
        for figure, label in (
            ("first_delta", "to the first delta"),
            ("completed", "to completion"),
        ):
            panels[f"streamed response, {label}"] = [
                ("on a conversation", (r.get("conversation") or {}).get(figure)),
                ("no conversation", (r.get("no_conversation") or {}).get(figure)),
                ("previous_response_id chain", (r.get("chain") or {}).get(figure)),
                ("raw NATS flow", raw.get(figure)),
            ]
        many = r.get("in_flight") or {}
        panels[f"streamed responses, {many.get('in_flight', 16)} in flight"] = [
            ("first delta", many.get("first_delta")),
            ("completed", many.get("completed")),
            ("raw flow completed", (raw.get("in_flight") or {}).get("completed")),
        ]
    if "memory" in w:
        panels["create conversation (64 in flight)"] = [
            ("convstore", w["memory"]["create_latency"])
        ]
    return panels


def write_chart(results: dict[str, Any], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    styles = {"always": "-", "default": "--", "target": ":"}
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    panels: dict[str, list[tuple[str, str, dict[str, Any] | None]]] = {}
    for mode_name, mode in results["modes"].items():
        for panel, series in _series(mode).items():
            panels.setdefault(panel, []).extend((mode_name, label, s) for label, s in series)
    count = max(len(panels) + (1 if _rebuild_rates(results) else 0), 1)
    cols = 3
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False)
    for ax, (panel, series) in zip(axes.flat, panels.items(), strict=False):
        labels = list(dict.fromkeys(label for _, label, _ in series))
        for mode_name, label, s in series:
            if not s or not s.get("cdf_ms"):
                continue
            ax.plot(
                s["cdf_ms"],
                range(101),
                linestyle=styles.get(mode_name, "-."),
                color=colours[labels.index(label) % len(colours)],
                label=f"{label} ({mode_name})",
            )
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.set_title(panel)
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("percentile")
        ax.axhline(99, color="grey", linewidth=0.5)
        ax.axhline(50, color="grey", linewidth=0.5)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    spare = list(axes.flat)[len(panels) :]
    rates = _rebuild_rates(results)
    if spare and rates:
        _draw_rates(spare.pop(0), rates)
    for ax in spare:
        ax.axis("off")
    title = "convstore latency distributions (CDF)"
    fig.suptitle(f"{title}  {results['date']}  {'quick' if results['quick'] else 'full'}")
    fig.tight_layout()
    path = out / "latency.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _minor_label(value: float, _: object) -> str:
    """Label 2, 5, 20, 50... between the decades, so a log axis reads without exponents."""
    digit = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0
    return f"{value:g}" if round(digit) in (2, 5) else ""


def _rebuild_rates(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """events/s of the raw reads and the folds, per mode, for the rebuild panel."""
    rates: dict[str, dict[str, float]] = {}
    for name, mode in results["modes"].items():
        rb = mode.get("workloads", {}).get("rebuild")
        if rb:
            rates[name] = {
                "raw ordered consumer": rb["raw_ordered_consumer"]["per_second"],
                "raw pull consumer (256)": rb["raw_pull_consumer_256"]["per_second"],
                "fold into memory": rb["fold_into_memory"]["per_second"],
                "rebuild into KV": rb["rebuild"]["per_second"],
            }
    return rates


def _draw_rates(ax: Any, rates: dict[str, dict[str, float]]) -> None:
    """Bars from zero on a linear axis, so lengths compare as the target does: the rebuild
    against half of its mode's raw ordered read (the dotted line in the mode's colour),
    its ratio written beside its bar."""
    labels = list(next(iter(rates.values())))
    height = 0.8 / len(rates)
    for n, (mode_name, figures) in enumerate(rates.items()):
        ys = [i + n * height for i in range(len(labels))]
        bars = ax.barh(ys, [figures[label] for label in labels], height=height, label=mode_name)
        raw = figures["raw ordered consumer"]
        colour = bars.patches[0].get_facecolor()
        ax.axvline(raw / 2, color=colour, linestyle=":", linewidth=1.2)
        rebuild = labels.index("rebuild into KV")
        ax.annotate(
            f"{figures['rebuild into KV'] / raw:.2f} of raw" if raw else "",
            (figures["rebuild into KV"], ys[rebuild]),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=7,
        )
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(labels))], labels, fontsize=8)
    ax.set_xlim(left=0)
    ax.set_xlabel("events/s (dotted: the target, half of the raw ordered read)")
    ax.set_title("rebuild: read and fold rates")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=7, loc="center right")
