"""Who is asking, and may they: API key authentication, the per-key rate limit, and the
tenant and role checks every route uses.

`Authenticate` (ASGI middleware) turns the bearer key of every /v1 request into a
`Principal` before anything else runs (401 for a missing or unknown key, 429 past the
key's rate). Routes take it as `Caller` and refuse other tenants' resources with
`require_tenant`, which answers exactly like a missing resource.
"""

import math
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import APIError, not_found
from api.keys import OPEN_PRINCIPAL, KeyRing, Principal
from api.ratelimit import RateLimiter, Verdict

PROTECTED_PREFIX = "/v1"
_bearer = HTTPBearer(auto_error=False, description="An API key: `Authorization: Bearer <key>`")


def bearer_token(scope: Scope) -> str | None:
    """The key of an `Authorization: Bearer <key>` header, as the openai SDK sends it."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() or None if scheme.lower() == "bearer" else None
    return None


def _masked(token: str) -> str:
    return f"{token[:3]}{'*' * 8}{token[-4:]}" if len(token) >= 12 else "*" * 8


def unauthorized(token: str | None) -> APIError:
    if token is None:
        message = (
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        )
    else:
        message = (
            f"Incorrect API key provided: {_masked(token)}. Ask the operator of this "
            "convstore for a valid key."
        )
    return APIError(401, message, code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def rate_limited(principal: Principal, verdict: Verdict) -> APIError:
    wait = verdict.retry_after
    return APIError(
        429,
        f"Rate limit reached for requests with API key '{principal.key_id}': at most "
        f"{verdict.limit} at once, refilled over time. Please try again in {wait:.3g}s.",
        type="requests",
        code="rate_limit_exceeded",
        headers={
            "Retry-After": str(max(1, math.ceil(wait))),
            "x-ratelimit-limit-requests": str(verdict.limit),
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": f"{wait:.3f}s",
        },
    )


async def send_error(err: APIError, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer from a middleware, with the same body the exception handlers give."""
    await JSONResponse(err.body, status_code=err.status, headers=err.headers)(scope, receive, send)


class Authenticate:
    """Every /v1 request needs a configured key, or none in open mode (tenant `default`,
    role admin). The principal goes into the request state for `caller`."""

    def __init__(self, app: ASGIApp, keys: KeyRing | None, limiter: RateLimiter) -> None:
        self.app = app
        self.keys = keys
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (
            path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")
        ):
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        principal = OPEN_PRINCIPAL if self.keys is None else self.keys.identify(token)
        if principal is None:
            await send_error(unauthorized(token), scope, receive, send)
            return
        verdict = self.limiter.take(principal.key_id, principal.rps, principal.burst)
        if not verdict.allowed:
            await send_error(rate_limited(principal, verdict), scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


async def caller(
    request: Request,
    _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated principal of this request (declares bearer auth in OpenAPI)."""
    principal = request.scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):  # a route outside /v1: Authenticate skipped it
        raise unauthorized(bearer_token(request.scope))
    return principal


Caller = Annotated[Principal, Depends(caller)]


def require_tenant(principal: Principal, owner: str | None, not_found_message: str) -> None:
    """Refuse a resource of another tenant (or of no known tenant) exactly as a missing
    one: the same 404 body, never a 403, so ids tell nothing. Roles do not widen this."""
    if owner is None or owner != principal.tenant:
        raise not_found(not_found_message)


def require_admin(principal: Principal, what: str) -> None:
    """Admin-only operations (cross-tenant feeds, destructive maintenance): 403."""
    if not principal.is_admin:
        raise APIError(
            403,
            f"You have insufficient permissions for this operation: {what} needs an admin API key.",
            code="insufficient_permissions",
        )
