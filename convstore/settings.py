"""Settings from `CONVSTORE_*` environment variables, overridden by command-line flags."""

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVSTORE_")

    host: str = "127.0.0.1"
    port: int = 8000
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
    # Model map (JSON, or a JSON file's path): see workers/providers/registry.py. Empty:
    # every model is answered by the built-in `echo` test provider.
    models: str = ""
    worker_concurrency: int = 16  # responses one model worker process runs at a time
    upstream_timeout: float = 120.0
    # Seconds before a response whose worker went silent goes to another worker (set when
    # the shared consumer is first created).
    worker_ack_wait: float = 30.0

    @property
    def nats_urls(self) -> list[str]:
        return [u.strip() for u in self.nats_url.split(",") if u.strip()]
