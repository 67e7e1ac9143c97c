"""Which provider answers which model: a small map from model names to upstreams.

`CONVSTORE_MODELS` holds the map as JSON, or the path of a JSON file:

    {"gpt-*": {"base_url": "https://api.openai.com/v1", "api_key_env": "OPENAI_API_KEY"},
     "llama3": {"base_url": "http://localhost:11434/v1", "model": "llama3.1:8b"},
     "*": {"provider": "echo"}}

A key is an exact model name, a prefix ending in `*`, or `*` for everything else; the
most specific match wins. `model` renames the model upstream. With no map at all every
model is answered by the built-in `echo` test provider, so the service runs offline.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workers.providers.base import Provider, ProviderError
from workers.providers.echo import EchoProvider
from workers.providers.openai_chat import OpenAIChatProvider


@dataclass(frozen=True)
class Route:
    provider: Provider
    upstream_model: str


def load_map(value: str) -> dict[str, Any]:
    """The model map from JSON text or a JSON file's path ('' = no map)."""
    value = value.strip()
    if not value:
        return {}
    text = value if value.startswith("{") else Path(value).read_text()
    data = json.loads(text)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError("CONVSTORE_MODELS: expected an object of objects")
    return data


class Registry:
    def __init__(self, models: dict[str, Any], timeout: float = 120.0) -> None:
        self.models = models
        self.timeout = timeout
        self.echo = EchoProvider()

    def route(self, model: str) -> Route:
        if not self.models:
            return Route(self.echo, model)
        entry = self.models.get(model)
        if entry is None:
            prefixes = [k for k in self.models if k.endswith("*") and model.startswith(k[:-1])]
            if prefixes:
                entry = self.models[max(prefixes, key=len)]
        if entry is None:
            raise ProviderError(
                "model_not_found",
                f"The model '{model}' does not exist or you do not have access to it.",
                retryable=False,
            )
        upstream = str(entry.get("model") or model)
        if entry.get("provider", "openai-chat") == "echo":
            return Route(self.echo, upstream)
        key_env = entry.get("api_key_env")
        api_key = os.environ.get(key_env) if key_env else entry.get("api_key")
        provider = OpenAIChatProvider(str(entry["base_url"]), api_key, self.timeout)
        return Route(provider, upstream)
