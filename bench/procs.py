"""CPU and memory of processes, so a figure can say who was the bottleneck.

A load generator that uses a whole core is measuring itself, not the server: every
workload reports its own client CPU and the server's, as a share of one core.
"""

import os
import time
from dataclasses import dataclass, field
from typing import Any

import psutil


def rss_bytes(pid: int) -> int:
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return 0


def cpu_seconds(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


@dataclass
class CpuMeter:
    """CPU used by this process and by `pids` over a stretch of wall time.

    `share(name)` is CPU seconds per wall second: 1.0 is one core busy all the time.
    """

    pids: dict[str, int] = field(default_factory=dict)
    _wall0: float = 0.0
    _self0: float = 0.0
    _pid0: dict[str, float] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)

    def __enter__(self) -> "CpuMeter":
        self._wall0 = time.perf_counter()
        self._self0 = time.process_time()
        self._pid0 = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        return self

    def __exit__(self, *_: object) -> None:
        wall = max(time.perf_counter() - self._wall0, 1e-9)
        self.shares = {"client": (time.process_time() - self._self0) / wall}
        for name, pid in self.pids.items():
            self.shares[name] = (cpu_seconds(pid) - self._pid0[name]) / wall

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in self.shares.items()}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class MachineBusy:
    """CPU busy on the whole machine over a stretch, in cores, and the load average.

    The benchmark shares its machine: a figure taken while other processes kept the
    cores busy says so in the JSON.
    """

    def start(self) -> "MachineBusy":
        self._times = psutil.cpu_times()
        self._wall = time.perf_counter()
        return self

    def stop(self) -> dict[str, Any]:
        now = psutil.cpu_times()
        wall = max(time.perf_counter() - self._wall, 1e-9)
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (
            self._times.idle + getattr(self._times, "iowait", 0.0)
        )
        cores = os.cpu_count() or 1
        return {
            "busy_cores": round(max(0.0, cores - idle / wall), 2),
            "cores": cores,
            "load_average": load_average(),
        }
