"""The 64-in-flight append driven by wrk (Debian's `wrk` package), when it is installed.

On a 2-core machine the load client shares the cores with the server it measures: the
Python client spends ~0.7 ms of CPU per append (0.6 of a core at 850 appends/s), which the
server then lacks. wrk spends a few microseconds. One wrk thread per connection, each on a
conversation of its own (as the Python client: one writer per conversation, no
optimistic-concurrency retries); its Lua `done` hook prints the count, the errors and a
101-point latency CDF as one JSON line.
"""

import asyncio
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.wire import auth_headers

SCRIPT = """
local paths = {%(paths)s}
local n = 0
function setup(thread)
  n = n + 1
  thread:set("path", paths[n])
end
function request()
  return wrk.format("%(method)s", path, {["Content-Type"] = "application/json"%(auth)s}, %(body)s)
end
function done(summary, latency, requests)
  local cdf = {}
  for q = 0, 100 do cdf[#cdf + 1] = string.format("%%.3f", latency:percentile(q) / 1000) end
  local e = summary.errors
  local fmt = 'WRK {"requests": %%d, "micros": %%d, "status": %%d, "socket": %%d, '
    .. '"mean_ms": %%.3f, "cdf": [%%s]}\\n'
  io.write(string.format(fmt, summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency.mean / 1000, table.concat(cdf, ",")))
end
"""


def lua_script(paths: list[str], body: dict[str, Any] | None) -> str:
    """The wrk script: each thread on its own path, POSTing `body` (or a GET without one),
    with the Authorization header when CONVSTORE_BENCH_API_KEY is set."""
    auth = "".join(f', ["{name}"] = [[{value}]]' for name, value in auth_headers().items())
    return SCRIPT % {
        "paths": ",".join(f'"{p}"' for p in paths),
        "method": "GET" if body is None else "POST",
        "auth": auth,
        "body": "nil" if body is None else f"[[{json.dumps(body, separators=(',', ':'))}]]",
    }


def available() -> bool:
    return shutil.which("wrk") is not None


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def append_in_flight(
    base_url: str, conversations: list[str], item: dict[str, Any], seconds: float
) -> dict[str, Any]:
    """POST the item to each conversation, one connection each."""
    prefix = urlsplit(base_url).path.rstrip("/")
    paths = [f"{prefix}/conversations/{c}/items" for c in conversations]
    return await in_flight(base_url, paths, {"items": [item]}, seconds)


async def in_flight(
    url: str, paths: list[str], body: dict[str, Any] | None, seconds: float
) -> dict[str, Any]:
    """One connection and thread per path (POST `body`, or GET without one), closed loop
    for `seconds`: figures shaped like `load.measure`'s, with `client: "wrk"`."""
    parts = urlsplit(url)
    script = lua_script(paths, body)
    n = len(paths)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "append.lua"
        path.write_text(script)
        cpu0, t0 = _children_cpu(), time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            "wrk", f"-t{n}", f"-c{n}", f"-d{max(1, round(seconds))}s", "--timeout", "30s",
            "-s", str(path), f"{parts.scheme}://{parts.netloc}",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await proc.communicate()
        wall, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    lines = [line for line in out.decode().splitlines() if line.startswith("WRK ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {out.decode()[-500:]}")
    w = json.loads(lines[-1][4:])
    cdf = w["cdf"]
    errors = w["status"] + w["socket"]
    share = round(cpu / wall, 2)
    return {
        "client": "wrk",
        "processes": 1,
        "requests": w["requests"] - w["status"],
        "errors": errors,
        "first_error": f"{errors} non-2xx or socket errors" if errors else None,
        "per_second": round((w["requests"] - w["status"]) / (w["micros"] / 1e6), 1),
        "client_cpu": [share],
        "client_cpu_max": share,
        "latency": {
            "n": w["requests"],
            "p50_ms": cdf[50],
            "p90_ms": cdf[90],
            "p99_ms": cdf[99],
            "max_ms": cdf[100],
            "mean_ms": w["mean_ms"],
            "cdf_ms": cdf,
        },
    }
