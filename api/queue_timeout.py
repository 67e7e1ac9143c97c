"""Fail a waited-for response that no model worker is alive to run.

A synchronous or streamed create waits for the response's outcome. With no model worker
running (an API started alone, every worker down), it would wait forever, and the
OpenAI SDK, timing out after 10 minutes, would send the request twice more: three
requests queued, all run when a worker comes back, three answers added to the
conversation. So while a client waits, every `CONVSTORE_QUEUE_TIMEOUT` seconds the API
asks whether any model worker is running (a request on WORKERS_ALIVE, which every worker
answers; NATS says "no responders" at once when none subscribes); when none is, twice in
a row, a response still `queued` (or `in_progress` on a worker that died) is failed
(`server_error`) with an append that expects the thread's head, so a worker's claim and
the failure cannot both land. A worker that gets the request later finds it finished
and drops it. Background responses wait in the queue by design and are never failed
here.
"""

import asyncio
import logging

from nats.aio.client import Client as NATS
from nats.errors import NoRespondersError

from api.services import Services
from events import commands, response_stream
from events.ids import response_thread
from events.schema import Actor, EventBase, ResponseFailed
from events.store import Head
from events.subjects import WORKERS_ALIVE
from projections.views import ResponseView

log = logging.getLogger("convstore.api")

ACTOR = Actor(id="api", kind="system")
RECHECK = 1.0  # seconds between the two looks that must both find no worker
ASK_TIMEOUT = 2.0


async def workers_alive(nc: NATS) -> bool:
    """Some model worker is running: one answers on WORKERS_ALIVE. A killed worker's
    subscription goes with its connection; a worker too busy to answer counts as alive."""
    try:
        await nc.request(WORKERS_ALIVE, b"", timeout=ASK_TIMEOUT)
    except NoRespondersError:
        return False
    except TimeoutError:
        pass
    return True


async def fail_when_no_worker(svc: Services, queued: ResponseView, every: float) -> None:
    """Run beside a client's wait until the caller cancels it (the outcome arrived), or
    until no worker is alive: then the response fails unless it is finished already."""
    while True:
        await asyncio.sleep(every)
        try:
            if await workers_alive(svc.nc):
                continue
            await asyncio.sleep(RECHECK)  # a worker restarting
            if await workers_alive(svc.nc):
                continue
            await _fail_if_unfinished(svc, queued, every)
            return
        except commands.ConversationNotFound:
            return  # deleted meanwhile: nothing to fail on it
        except Exception:  # NATS away: the client keeps waiting, as without this
            log.exception("checking for model workers for %s", queued.id)


async def _fail_if_unfinished(svc: Services, queued: ResponseView, every: float) -> None:
    """Append the failure and end the response's stream, if the response is still queued,
    or in progress on a worker that is gone (checked before: none is alive)."""
    thread = response_thread(queued.id)
    messages = {
        "queued": f"No model worker took this response within {every:g} seconds (none is "
        "running); it was not run.",
        "in_progress": "The model worker running this response stopped, and no other is "
        "running to take it over.",
    }

    async def decide(head: Head) -> list[EventBase]:
        view = await svc.reader.response_at(queued.id, head.seq)
        if view is None or view.status not in messages:
            return []
        error = {"code": "server_error", "message": messages[view.status]}
        return [
            ResponseFailed(conversation_id=thread, response_id=queued.id, error=error, actor=ACTOR)
        ]

    seq, events = await commands.decide_and_append(svc.store, thread, decide)
    if not events:
        return
    failed = await svc.reader.response_at(queued.id, seq)
    assert failed is not None
    await response_stream.end_untaken(svc.nc, svc.js, queued.id, queued.public(), failed.public())
