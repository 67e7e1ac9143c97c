"""`x-request-id` (api/request_id.py) on an unhandled error: exactly one, whether the
fast lane called the 500 handler inside the middleware or Starlette did outside it."""

from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from api import errors
from api.fast_lane import FastLane
from api.keys import Principal
from api.request_id import RequestId
from api.routes import conversations


class _Admin:
    """Stands in for Authenticate: every request is an admin's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope.setdefault("state", {})["principal"] = Principal("k", "default", "admin")
        await self.app(scope, receive, send)


async def _boom(*_: Any, **__: Any) -> None:
    raise RuntimeError("a bug")


async def test_an_unhandled_error_names_its_request_once(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(conversations, "retrieve_conversation", _boom)
    app = FastAPI()
    errors.install(app)
    app.state.services = object()
    app.add_middleware(FastLane)
    app.add_middleware(_Admin)
    app.add_middleware(RequestId)

    @app.get("/v1/elsewhere")
    async def elsewhere() -> None:
        raise RuntimeError("a bug on FastAPI's path")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for path in (f"/v1/conversations/conv_{'a' * 48}", "/v1/elsewhere"):
            r = await client.get(path)
            assert r.status_code == 500, (path, r.text)
            assert r.json()["error"]["type"] == "server_error"
            (rid,) = r.headers.get_list("x-request-id")
            assert rid.startswith("req_"), path
