"""Views as stored, plus changes folded in memory on top: a read that needs a few events
more than the projector has stored folds them itself instead of waiting for it.

Writes stay in the overlay (nothing reaches the store); reads return the overlay's value
for a key it holds, nothing for a key under a prefix it purged, and the stored value
otherwise.
"""

from typing import Any

from projections.apply import Change, Delete, Put
from projections.store import ViewStore, subject_matches

_ABSENT = None


class OverlayViews:
    def __init__(
        self, base: ViewStore, seed: dict[str, dict[str, Any] | None] | None = None
    ) -> None:
        self.base = base
        self.data: dict[str, dict[str, Any] | None] = dict(seed or {})
        self.purged: list[str] = []

    def _local(self, key: str) -> bool:
        return key in self.data or any(key.startswith(p) for p in self.purged)

    async def get(self, key: str) -> dict[str, Any] | None:
        if self._local(key):
            return self.data.get(key, _ABSENT)
        return await self.base.get(key)

    async def get_many(self, keys: list[str]) -> list[dict[str, Any] | None]:
        stored = [k for k in keys if not self._local(k)]
        found = dict(zip(stored, await self.base.get_many(stored), strict=True)) if stored else {}
        return [found[k] if k in found else self.data.get(k, _ABSENT) for k in keys]

    async def get_matching(self, patterns: list[str]) -> dict[str, dict[str, Any]] | None:
        stored = await self.base.get_matching(patterns)
        if stored is None:
            return None
        found = {k: v for k, v in stored.items() if not self._local(k)}
        for key, value in self.data.items():
            if value is not None and any(subject_matches(p, key) for p in patterns):
                found[key] = value
        return found

    async def write(self, changes: list[Change]) -> None:
        for change in changes:
            if isinstance(change, Put):
                self.data[change.key] = change.value
            elif isinstance(change, Delete):
                self.data[change.key] = _ABSENT
            else:
                for key in [k for k in self.data if k.startswith(change.prefix)]:
                    del self.data[key]
                self.purged.append(change.prefix)
