"""Settings from `CONVSTORE_*` environment variables, overridden by command-line flags."""

import math
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.limits import Limits


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVSTORE_")

    host: str = "127.0.0.1"
    port: int = 8000
    # API processes `serve` runs on its one port: the API is one event loop (one core) per
    # process and holds no state, so more processes use more cores. "auto": see
    # api_process_count. 1 is the API in serve's own process only.
    api_processes: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    data_dir: Path = Path(".convstore")
    # Comma-separated NATS URLs; empty means: start an embedded nats-server.
    nats_url: str = ""
    replicas: int = 1
    # fsync every write before acknowledging it (embedded server only): an acknowledged
    # write then survives a power cut. Turn off only with replicas.
    sync_always: bool = True
    read_wait_timeout: float = 5.0
    request_timeout: float = 5.0
    ready_max_lag: int = 1000
    log_level: str = "info"
    # uvicorn's line per HTTP request: off by default, since it cost 5% of the API's CPU
    # and the event log already says who changed what, when (the audit commands).
    access_log: bool = False
    # FastAPI's built-in OpenTelemetry (traces, metrics, logs to the providers an operator
    # configures, e.g. with opentelemetry-instrument): off by default, since checking for
    # a provider on every request cost ~5% of the API's CPU.
    otel: bool = False
    # Model map (JSON, or a JSON file's path): see workers/providers/registry.py. Empty:
    # every model is answered by the built-in `echo` test provider.
    models: str = ""
    # Seconds a synchronous or streamed response may wait with no model worker alive
    # before it fails instead of waiting forever (api/queue_timeout.py); 0 = forever.
    queue_timeout: float = Field(60.0, ge=0)
    worker_concurrency: int = 16  # responses one model worker process runs at a time
    upstream_timeout: float = 120.0
    # Seconds before a response whose worker went silent goes to another worker (set when
    # the shared consumer is first created).
    worker_ack_wait: float = 30.0
    # API keys (README, Security): a JSON or TOML file, and/or `key:tenant[:role],...`.
    # Neither set means open development mode, which listens on loopback only.
    api_keys_file: Path | None = None
    api_keys: str = ""
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_text_chars: int = Field(10 * 1024 * 1024, ge=1)
    rate_limit_rps: float = Field(0.0, ge=0)  # per key and API process; 0 = unlimited
    rate_limit_burst: int = Field(0, ge=0)  # 0 = one second's worth
    idempotency_ttl: float = Field(24 * 3600.0, gt=0)  # seconds an Idempotency-Key is kept
    # Processes `convstore rebuild` folds the log in (projections/shards.py); "auto": one
    # per usable core, at most 4. 1 by default: each shard reads the whole log, which on
    # two cores cost more than the second process gained (bench/HISTORY.md, session 12).
    rebuild_shards: Annotated[int, Field(ge=1)] | Literal["auto"] = 1

    def api_process_count(self) -> int:
        """`api_processes`; "auto" is one per usable core, at most 4. More processes than
        cores add memory (~65 MB each) and no throughput. The cap is a judgment: all of
        them feed one projector (one core) and one nats-server on the same machine, so
        past a few the API is no longer what limits serve; scale further with `convstore
        api` replicas on other machines."""
        if isinstance(self.api_processes, int):
            return self.api_processes
        return max(1, min(usable_cores(), AUTO_API_PROCESSES_MAX))

    def rebuild_shard_count(self) -> int:
        """`rebuild_shards`; "auto" is one per usable core, at most 4: each shard reads the
        whole log, so past the cores more only add reading."""
        if isinstance(self.rebuild_shards, int):
            return self.rebuild_shards
        return max(1, min(usable_cores(), AUTO_API_PROCESSES_MAX))

    def limits(self) -> Limits:
        return Limits(
            max_body_bytes=self.max_body_bytes,
            max_text_chars=self.max_text_chars,
            rate_limit_rps=self.rate_limit_rps,
            rate_limit_burst=self.rate_limit_burst,
            idempotency_ttl=self.idempotency_ttl,
        )

    @property
    def nats_urls(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]


AUTO_API_PROCESSES_MAX = 4


def usable_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """The cores this process may run on: its CPU affinity (a cpuset, taskset), and a
    cgroup v2 CPU quota (a container's --cpus), which neither affinity nor cpu_count see."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = cores or os.cpu_count() or 1
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota
    return cores
