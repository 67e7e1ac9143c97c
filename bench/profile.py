"""Optional sampling profiles (--profile): py-spy records a process while one workload
runs, and the hottest functions are summarised into the results.

The samples are collapsed stacks ("raw" format), kept next to the results so a flame
graph can be drawn later; the summary lists self time and inclusive time per function.
"""

import contextlib
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


@contextlib.contextmanager
def recording(pid: int, path: Path, rate: int = 100) -> Iterator[None]:
    """Sample `pid` into `path` (collapsed stacks) for the duration of the block."""
    binary = py_spy()
    if binary is None:
        raise RuntimeError("--profile needs py-spy: pip install -e '.[bench]'")
    # --gil: only the thread running Python, so idle pools and waits do not count.
    args = ["record", "--pid", str(pid), "--format", "raw", "--gil", "-r", str(rate)]
    process = subprocess.Popen(
        [binary, *args, "-o", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def package(frame: str) -> str:
    """`fn (pydantic/main.py:280)` -> `pydantic`; stdlib modules keep their file name."""
    location = frame.rpartition("(")[2].rstrip(")")
    parts = location.split(":")[0].strip("/").split("/")
    return parts[0].removesuffix(".py") or "?"


def top(path: Path, count: int = 15) -> dict[str, Any]:
    """Hottest functions of a collapsed-stack file: self and inclusive shares, and self
    time by package (which library the CPU went to)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"samples": 0}
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        total += int(n)
        if frames:
            own[frames[-1]] += int(n)
            packages[package(frames[-1])] += int(n)
        for frame in set(frames):
            inclusive[frame] += int(n)

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[f, round(n / total, 3)] for f, n in counter.most_common(count)]

    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "self_by_package": share(packages),
        "self": share(own),
        "inclusive": share(inclusive),
    }
