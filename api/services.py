"""What a request handler needs, opened once per process in the app's lifespan."""

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from api.limits import Limits
from events.store import EventStore
from projections.page_hints import PageHints
from projections.reader import ViewReader


@dataclass
class Services:
    nc: NATS
    js: JetStreamContext
    store: EventStore
    reader: ViewReader
    ready_max_lag: int
    limits: Limits = field(default_factory=Limits)
    # Seconds a waited-for response may find no model worker alive before it fails
    # (api/queue_timeout.py); 0 waits as long as it takes.
    queue_timeout: float = 60.0
    # Where the next page of a conversation probably lies (projections/page_hints.py).
    page_hints: PageHints = field(default_factory=PageHints)


async def services(request: Request) -> Services:
    """Async on purpose: FastAPI runs a plain `def` dependency in a thread pool, and that
    hand-off cost more than the whole append here."""
    return request.app.state.services  # type: ignore[no-any-return]


def client_ip(request: Request) -> str | None:
    """The client's address, recorded in events' actor next to the key id."""
    return request.client.host if request.client else None


def include_param(request: Request) -> list[str]:
    """`include` as the SDK sends it (`include[]=...`) or as plain repeated keys."""
    q = request.query_params
    return [*q.getlist("include"), *q.getlist("include[]")]


Svc = Annotated[Services, Depends(services)]
