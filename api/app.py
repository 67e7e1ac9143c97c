"""FastAPI application factory: connects to NATS in the lifespan, mounts the routes."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import errors
from api.routes import conversations, events, health, items, responses
from api.services import Services
from events.connection import connect
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
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nc = await connect(nats_urls, "convstore-api")
        js = nc.jetstream(timeout=request_timeout)
        await ensure_stream(js, replicas=replicas)
        await ensure_response_stream(js, replicas=replicas)
        views = ActiveViews(js, replicas)
        await views.start()
        app.state.services = Services(
            nc=nc,
            js=js,
            store=EventStore(nc, js, timeout=request_timeout),
            reader=ViewReader(views, wait_timeout=read_wait_timeout),
            ready_max_lag=ready_max_lag,
        )
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
    )
    errors.install(app)
    for module in (conversations, items, responses, events, health):
        app.include_router(module.router)
    return app
