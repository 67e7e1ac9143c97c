"""`python -m bench`: start nats-server and `convstore serve`, run the workloads, compare
with raw JetStream on the same server, and report (stdout, latest.json, latency.png).

Exit status: 0 when every workload ran (whatever the targets say: they are reported,
not enforced), 1 when a workload failed to run, 2 for bad arguments.
"""

import argparse
import asyncio
import datetime
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import report
from bench.config import sized
from bench.context import DEFAULT_MODEL
from bench.procs import load_average
from bench.runner import ALL_WORKLOADS, MODES, TARGET_WORKLOADS, Options, run_mode, run_target, say
from bench.server import (
    ROOT,
    SERVER_PACKAGES,
    code_fingerprint,
    nats_server_version,
    snapshot_code,
)
from convstore.loop import run_loop

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke test under a minute")
    p.add_argument(
        "--durability",
        choices=["always", "default", "both"],
        default="both",
        help="sync_interval: always (CONVSTORE_SYNC_ALWAYS=true), nats-server's default "
        "fsync (false), or both one after the other (default: both)",
    )
    p.add_argument(
        "--target",
        metavar="URL",
        help="run only the HTTP workloads (append, visibility, list, responses) against this "
        "OpenAI-compatible API root, e.g. http://host:8000/v1; no baseline, rebuild or memory "
        "(an API key, if it wants one, from the environment: CONVSTORE_BENCH_API_KEY)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder (bench/results)")
    p.add_argument(
        "--workloads",
        default=",".join(ALL_WORKLOADS),
        help=f"comma-separated subset of {','.join(ALL_WORKLOADS)} (default: all)",
    )
    p.add_argument("--rebuild-events", type=int, help="log size for rebuild (full: 1,000,000)")
    p.add_argument("--conversations", type=int, help="conversations for memory (full: 100,000)")
    p.add_argument(
        "--client-procs",
        default="auto",
        help="processes for the 64-in-flight loads: a number, or auto (a second process "
        "when one client process saturates its core)",
    )
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="the model the responses workload asks for: any name on the benchmark's own "
        f"server (echo answers every model), one the --target has otherwise ({DEFAULT_MODEL})",
    )
    p.add_argument("--workdir", type=Path, help="where the servers' data goes (system temp)")
    p.add_argument(
        "--profile",
        action="store_true",
        help="sample the serve process (and the rebuild) with py-spy during each workload; "
        "profiles go to --out and their top functions into the JSON (slows the figures)",
    )
    args = p.parse_args(argv)
    chosen = tuple(w.strip() for w in args.workloads.split(",") if w.strip())
    unknown = set(chosen) - set(ALL_WORKLOADS)
    if unknown:
        p.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    args.workloads = chosen
    if args.client_procs != "auto" and not args.client_procs.isdigit():
        p.error("--client-procs takes a number or auto")
    return args


def environment() -> dict[str, Any]:
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "missing"

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    commit = git("describe", "--always", "--dirty").strip()
    changed = git("status", "--porcelain", "--", *SERVER_PACKAGES).splitlines()
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "nats_server": nats_server_version(),
        "nats_py": version("nats-py"),
        "httpx": version("httpx"),
        "faststream": version("faststream"),
        "git": commit,
        "server_files_changed_since_commit": [line[3:] for line in changed],
        "load_average_start": load_average(),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    # SIGTERM cancels the run like Ctrl-C does, so the servers it started are stopped.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    sizes = sized(args.quick, args.rebuild_events, args.conversations)
    procs = None if args.client_procs == "auto" else int(args.client_procs)
    profile_dir = args.out if args.profile else None
    code = Path(tempfile.mkdtemp(prefix="convstore-bench-code-", dir=args.workdir))
    fingerprint = snapshot_code(code)
    options = Options(sizes, procs, args.workloads, args.workdir, profile_dir, code, args.model)
    results: dict[str, Any] = {
        "version": 1,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quick": args.quick,
        "target": args.target,
        "argv": sys.argv[1:],
        "sizes": sizes.__dict__,
        "environment": {**environment(), "server_code": fingerprint},
        "notes": [],
        "modes": {},
    }
    try:
        await _run_modes(args, options, results)
    finally:
        shutil.rmtree(code, ignore_errors=True)
    results["environment"]["load_average_end"] = load_average()
    if code_fingerprint() != fingerprint:
        results["notes"].append(
            f"the server's sources changed during the run; every figure is of the "
            f"snapshot taken at the start ({fingerprint}), except the rebuild workload's "
            f"fold, which runs in this process with the modules it imported at start"
        )
    return results


async def _run_modes(args: argparse.Namespace, options: Options, results: dict[str, Any]) -> None:
    if args.target:
        skipped = [w for w in args.workloads if w not in TARGET_WORKLOADS]
        results["notes"].append(
            "--target: raw JetStream baselines, rebuild and memory are skipped (they need "
            "the benchmark's own NATS and processes); response times include that "
            "server's model, so the store-overhead target is not judged"
            + (f"; not run: {', '.join(skipped)}" if skipped else "")
        )
        results["modes"]["target"] = await run_target(args.target, options)
    else:
        names = list(MODES) if args.durability == "both" else [args.durability]
        for name in names:
            results["modes"][name] = await run_mode(name, options)
            # How many API processes serve ran (CONVSTORE_API_PROCESSES; the same in
            # every mode): the throughput figures depend on it.
            if "api_processes" in results["modes"][name]:
                results["environment"]["api_processes"] = results["modes"][name]["api_processes"]


def run(argv: list[str] | None = None) -> int:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        results = run_loop(main(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted: servers stopped, nothing written")
        return 130
    results["seconds_total"] = round(time.monotonic() - start, 1)
    json_path = report.write_json(results, args.out)
    chart = report.write_chart(results, args.out)
    print(report.table(results))
    say(f"wrote {json_path} and {chart}")
    failed = {
        f"{m}/{w}": e for m, mode in results["modes"].items() for w, e in mode["errors"].items()
    }
    for where, error in failed.items():
        say(f"workload {where} did not run: {error}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(run())
