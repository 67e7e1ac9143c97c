"""The hot routes without FastAPI's routing, dependency injection and serialization.

A list page spent about a third of its CPU in FastAPI and Starlette around the handler
(route matching, solving `Svc`/`Caller`, parsing and validating the query and body, and
encoding the returned dict twice), more than its NATS reads. This middleware, the
innermost of ours (inside authentication, the body limit and idempotency), serves the
plainest form of the busiest requests by calling the very same route functions with
what FastAPI would have passed them, and answers their exceptions with the app's own
exception handlers. Anything it does not recognise exactly (another query parameter, a
limit that is not plain digits, a body that is not a JSON object, another content type)
goes on to FastAPI unchanged, so every edge keeps FastAPI's behaviour by construction.
"""

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.idempotency import header
from api.keys import Principal
from api.limits import read_body, replay
from api.routes import conversations, health, items, responses
from api.services import Services
from events import codec

Handler = Callable[..., Awaitable[Any]]

_ITEMS = re.compile(r"/v1/conversations/([^/]+)/items")
_ITEM = re.compile(r"/v1/conversations/([^/]+)/items/([^/]+)")
_CONVERSATION = re.compile(r"/v1/conversations/([^/]+)")
_INCLUDE = frozenset({"include", "include[]"})
_LIST_QUERY = frozenset({"after", "limit", "order", "as_of"}) | _INCLUDE
_AS_OF = frozenset({"as_of"}) | _INCLUDE
_BODY_ONLY = frozenset({"/v1/conversations", "/v1/responses"})  # POSTs with no parameters
_JSON = (b"content-type", b"application/json")


class FastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if method == "GET" and path == "/healthz":
            await _answer(send, await health.healthz())
            return
        principal = scope.get("state", {}).get("principal")
        app = scope.get("app")
        if not isinstance(principal, Principal) or app is None:
            await self.app(scope, receive, send)
            return
        if method == "GET":
            call = _get(path, _query(scope))
        elif method == "POST":
            call, receive = await _post(path, scope, receive)
        else:
            call = None
        if call is None:
            await self.app(scope, receive, send)
            return
        svc: Services = app.state.services
        request = Request(scope, receive)
        try:
            result = await call(svc, principal, request)
        except Exception as exc:
            handler = _handler(app.exception_handlers, exc)
            if handler is None:
                raise
            await (await handler(request, exc))(scope, receive, send)
            return
        if isinstance(result, Response):  # a streamed response
            await result(scope, receive, send)
        else:
            await _answer(send, result)


def _get(path: str, query: dict[str, str] | None) -> Handler | None:
    if query is None:
        return None
    if m := _ITEMS.fullmatch(path):
        if not query.keys() <= _LIST_QUERY or not _plain_int(query.get("limit")):
            return None
        limit = query.get("limit")
        return lambda svc, who, request: items.list_items(
            svc,
            who,
            m[1],
            request,
            after=query.get("after"),
            limit=None if limit is None else int(limit),
            order=query.get("order"),
            as_of=query.get("as_of"),
        )
    if not query.keys() <= _AS_OF:
        return None
    if m := _ITEM.fullmatch(path):
        return lambda svc, who, request: items.retrieve_item(
            svc, who, m[1], m[2], request, as_of=query.get("as_of")
        )
    if m := _CONVERSATION.fullmatch(path):
        if _INCLUDE & query.keys():
            return None  # FastAPI ignores include here; so does the fallback
        return lambda svc, who, _: conversations.retrieve_conversation(
            svc, who, m[1], as_of=query.get("as_of")
        )
    return None


async def _post(path: str, scope: Scope, receive: Receive) -> tuple[Handler | None, Receive]:
    """A POST it serves, and a receive that still yields the body for the fallback."""
    m = _ITEMS.fullmatch(path)
    if not (m or path in _BODY_ONLY) or not _json_body(scope):
        return None, receive
    query = _query(scope)
    if query is None or not query.keys() <= (_INCLUDE if m else frozenset()):
        return None, receive
    raw = await read_body(receive)
    if raw is None:  # the client went away
        return None, receive
    receive = replay(raw, receive)
    body: Any = None
    if raw:
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return None, receive  # FastAPI's 400 for a body that is not JSON (or too deep)
        if not isinstance(body, dict):
            return None, receive
    if m:
        return lambda svc, who, request: items.create_items(svc, who, m[1], request, body), receive
    if path == "/v1/responses":
        return lambda svc, who, request: responses.create_response(svc, who, request, body), receive
    return lambda svc, who, request: conversations.create_conversation(
        svc, who, request, body
    ), receive


def _query(scope: Scope) -> dict[str, str] | None:
    """Each parameter once, or None (a repeated one is FastAPI's to interpret)."""
    raw = scope.get("query_string", b"")
    if not raw:
        return {}
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    query = dict(pairs)
    return query if len(query) == len(pairs) else None


def _plain_int(value: str | None) -> bool:
    return value is None or (value.isascii() and value.isdigit())


def _json_body(scope: Scope) -> bool:
    """No content type, or JSON: the ones FastAPI parses as JSON."""
    kind = header(scope, b"content-type")
    return kind is None or kind.split(";", 1)[0].strip().lower() == "application/json"


def _handler(handlers: dict[Any, Handler], exc: Exception) -> Handler | None:
    for cls in type(exc).__mro__:
        if cls in handlers:
            return handlers[cls]
    return None


async def _answer(send: Send, result: Any) -> None:
    body = codec.dumps(result)
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
