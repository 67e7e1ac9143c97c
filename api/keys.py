"""API keys: who a bearer token is (a tenant and a role), from a keys file or an env list.

Only sha256 digests of the keys are kept, and a keys file may hold digests alone, so no
plaintext key has to be on disk. No keys configured at all means open development mode.
"""

import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from events.schema import DEFAULT_TENANT, Actor

Role = Literal["user", "admin"]
# Tenants become KV key tokens (projections/views.py) and idempotency key prefixes.
TENANT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
NAME_PATTERN = r"^[A-Za-z0-9_.@:-]{1,64}$"
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


class KeyConfigError(ValueError):
    """The keys configuration cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Principal:
    """Who a request acts as. `key_id` is not secret: it is recorded in events."""

    key_id: str
    tenant: str
    role: Role
    open_mode: bool = False
    rps: float | None = None  # this key's rate limit, overriding the server's
    burst: int | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def actor(self, ip: str | None) -> Actor:
        """The actor events record for this principal."""
        if self.open_mode:
            return Actor(ip=ip, tenant=self.tenant)
        return Actor(id=self.key_id, kind="api_key", ip=ip, tenant=self.tenant)


OPEN_PRINCIPAL = Principal("anonymous", DEFAULT_TENANT, "admin", open_mode=True)


def hash_key(key: str) -> str:
    """The stored form of a key: sha256 of its UTF-8 bytes, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyEntry(BaseModel):
    """One key in a keys file: the key itself or its sha256, and whose it is."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(None, min_length=1)
    sha256: str | None = None
    tenant: str = Field(pattern=TENANT_PATTERN)
    role: Role = "user"
    name: str | None = Field(None, pattern=NAME_PATTERN)
    rps: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_secret(self) -> "KeyEntry":
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("give exactly one of 'key' and 'sha256'")
        if self.sha256 is not None and not _DIGEST.match(self.sha256.lower()):
            raise ValueError("'sha256' must be 64 hex digits")
        return self

    def digest(self) -> str:
        return self.sha256.lower() if self.sha256 else hash_key(self.key or "")

    def principal(self) -> Principal:
        key_id = self.name or f"key_{self.digest()[:12]}"
        return Principal(key_id, self.tenant, self.role, rps=self.rps, burst=self.burst)


class KeyRing:
    """Digest -> principal. A lookup hashes the presented token first, so its timing depends
    only on that digest, which tells an attacker nothing about any stored key."""

    def __init__(self, entries: list[KeyEntry]) -> None:
        self._by_digest: dict[str, Principal] = {}
        for entry in entries:
            digest = entry.digest()
            if digest in self._by_digest:
                raise KeyConfigError(f"key of tenant {entry.tenant!r} is listed twice")
            self._by_digest[digest] = entry.principal()

    def __len__(self) -> int:
        return len(self._by_digest)

    def identify(self, token: str | None) -> Principal | None:
        return self._by_digest.get(hash_key(token)) if token else None

    def tenants(self) -> set[str]:
        return {p.tenant for p in self._by_digest.values()}


def parse_env(value: str) -> list[dict[str, Any]]:
    """`key:tenant[:role],...` (as in CONVSTORE_API_KEYS) as key entries."""
    entries = []
    for n, part in enumerate(p.strip() for p in value.split(",")):
        if not part:
            continue
        fields = part.split(":")
        if len(fields) not in (2, 3):
            raise KeyConfigError(
                f"CONVSTORE_API_KEYS entry {n + 1}: expected key:tenant[:role], got "
                f"{len(fields)} field(s)"
            )
        entries.append(dict(zip(("key", "tenant", "role"), fields, strict=False)))
    return entries


def read_file(path: Path) -> list[dict[str, Any]]:
    """A keys file: TOML (`[[keys]]` tables) when it ends in .toml, else JSON
    (`{"keys": [...]}` or a bare list)."""
    try:
        text = path.read_text()
        data: Any = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise KeyConfigError(f"keys file {path}: {exc}") from None
    keys = data.get("keys") if isinstance(data, dict) else data
    if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
        raise KeyConfigError(f"keys file {path}: expected a list of key tables under 'keys'")
    return keys


def load(keys_file: Path | None, keys_env: str) -> KeyRing | None:
    """The configured keys (file and env together), or None for open development mode."""
    raw = (read_file(keys_file) if keys_file else []) + parse_env(keys_env)
    if not raw:
        if keys_file:
            raise KeyConfigError(f"keys file {keys_file} lists no keys")
        return None
    entries = []
    for n, item in enumerate(raw):
        try:
            entries.append(KeyEntry(**item))
        except (ValidationError, TypeError) as exc:
            raise KeyConfigError(f"API key entry {n + 1}: {_first_error(exc)}") from None
    return KeyRing(entries)


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        return f"{where + ': ' if where else ''}{err.get('msg', 'invalid')}"
    return str(exc)
