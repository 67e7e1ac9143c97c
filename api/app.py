"""FastAPI application factory: connects to NATS in the lifespan, mounts the routes."""

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from api import errors, openapi
from api.auth import Authenticate
from api.fast_lane import FastLane
from api.idempotency import Idempotency, open_store
from api.keys import KeyRing
from api.limits import BodyLimit, Limits
from api.ratelimit import RateLimiter
from api.request_id import RequestId
from api.routes import conversations, events, health, items, responses
from api.services import Services
from events.connection import connect
from events.history import History
from events.response_stream import ensure_response_stream
from events.store import EventStore, ensure_stream
from projections.active import ActiveViews
from projections.reader import ViewReader
from projections.worker import close_quietly

log = logging.getLogger("convstore.api")


def create_app(
    nats_urls: list[str],
    *,
    replicas: int = 1,
    read_wait_timeout: float = 5.0,
    request_timeout: float = 5.0,
    ready_max_lag: int = 1000,
    keys: KeyRing | None = None,
    limits: Limits | None = None,
    telemetry: bool = False,
    queue_timeout: float = 60.0,
) -> FastAPI:
    """The API. `keys` None is open development mode: every request is tenant `default`
    with the admin role (the CLI allows that on loopback only). `telemetry`: FastAPI's
    own OpenTelemetry instrumentation (see `_telemetry`)."""
    limits = limits or Limits()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nc = await connect(nats_urls, "convstore-api")
        js = nc.jetstream(timeout=request_timeout)
        await ensure_stream(js, replicas=replicas)
        await ensure_response_stream(js, replicas=replicas)
        views = ActiveViews(js, replicas)
        await views.start()
        store = EventStore(nc, js, timeout=request_timeout)
        app.state.services = Services(
            nc=nc,
            js=js,
            store=store,
            reader=ViewReader(views, wait_timeout=read_wait_timeout, history=History(store)),
            ready_max_lag=ready_max_lag,
            limits=limits,
            queue_timeout=queue_timeout,
        )
        app.state.idempotency = await open_store(
            js, replicas, limits.idempotency_ttl, nc.max_payload
        )
        if keys is None:
            log.warning(
                "OPEN DEVELOPMENT MODE: no API keys configured; every request acts as tenant "
                "'default' with the admin role. Configure CONVSTORE_API_KEYS_FILE or "
                "CONVSTORE_API_KEYS before exposing this server."
            )
        else:
            log.info("API keys: %d keys of %d tenants", len(keys), len(keys.tenants()))
        try:
            yield
        finally:
            await views.stop()
            await close_quietly(nc.drain())
            await close_quietly(nc.close())

    app = FastAPI(
        title="convstore",
        summary="Event-sourced, OpenAI-compatible conversation store on NATS JetStream",
        version="0.1.0",
        lifespan=lifespan,
        # A body with no Content-Type is read as JSON, as the fast lane reads it (curl -d,
        # requests' data=, httpx' content= send none): the same answer on every route.
        strict_content_type=False,
        # A trailing slash is another URL (OpenAI's 404), not a redirect to the route.
        redirect_slashes=False,
        **_telemetry(telemetry),
    )
    errors.install(app)
    openapi.install(app)
    # Outermost last: name the request, authenticate (401/429), bound the body (413), then
    # idempotency, then the hot routes' fast lane.
    app.add_middleware(FastLane)
    app.add_middleware(Idempotency)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    limiter = RateLimiter(limits.rate_limit_rps, limits.rate_limit_burst)
    app.add_middleware(Authenticate, keys=keys, limiter=limiter)
    app.add_middleware(RequestId)  # outermost: every response, refusals included
    for module in (conversations, items, responses, events, health):
        app.include_router(module.router)
    return app


def _telemetry(on: bool) -> dict[str, Any]:
    """FastAPI's native OpenTelemetry (0.16x) asks the global providers on every request
    whether one is configured, environment lookups included: ~5% of the API's CPU on an
    append, with nobody listening. Off unless asked for (CONVSTORE_OTEL); a FastAPI
    without the setting has nothing to turn off."""
    if on or "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
