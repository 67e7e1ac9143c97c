"""The few OpenAI Conversations API calls the workloads make, with errors that say why."""

from typing import Any

import httpx

from bench.payload import http_item


class HttpFailure(RuntimeError):
    pass


def checked(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise HttpFailure(
            f"{response.request.method} {response.request.url.path}: "
            f"HTTP {response.status_code} {response.text[:300]}"
        )
    return dict(response.json())


async def create_conversation(client: httpx.AsyncClient, items: int = 0) -> str:
    body: dict[str, Any] = {"metadata": {"bench": "convstore"}}
    if items:
        body["items"] = [http_item() for _ in range(items)]
    return str(checked(await client.post("conversations", json=body))["id"])


async def add_items(client: httpx.AsyncClient, conversation_id: str, count: int = 1) -> list[str]:
    body = {"items": [http_item() for _ in range(count)]}
    page = checked(await client.post(f"conversations/{conversation_id}/items", json=body))
    return [item["id"] for item in page["data"]]


async def list_items(
    client: httpx.AsyncClient,
    conversation_id: str,
    order: str = "desc",
    after: str | None = None,
    limit: int = 20,
) -> dict[str, Any]:
    params: dict[str, Any] = {"limit": limit, "order": order}
    if after:
        params["after"] = after
    return checked(await client.get(f"conversations/{conversation_id}/items", params=params))
