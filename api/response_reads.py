"""Reading a stored response by id, as every /v1/responses route and an item reference
to a response's item do."""

from api.auth import require_tenant
from api.errors import APIError, not_found
from api.keys import Principal
from api.services import Services
from events.ids import response_thread
from events.store import Head
from events.subjects import is_safe_id
from projections.reader import ViewReader
from projections.views import ResponseView

# What a Response's thread may end with before nothing more can be read of it.
GONE = frozenset({"ConversationPurged", "ResponseDeleted"})


def missing(response_id: str) -> APIError:
    return not_found(f"Response with id '{response_id}' not found.")


def thread_of(response_id: str) -> str:
    if not response_id.startswith("resp_") or not is_safe_id(response_id):
        raise missing(response_id)
    return response_thread(response_id)


async def read_response(
    svc: Services, caller: Principal, response_id: str
) -> tuple[Head, ResponseView, ViewReader]:
    """The response as of its thread's head (read-your-writes), or 404 (also when it is
    another tenant's: the same answer as for an id that never existed)."""
    thread = thread_of(response_id)
    head = await svc.store.head(thread)
    if head is None or (head.event_type in GONE and thread == response_id):
        raise missing(response_id)
    if head.event_type == "ConversationPurged":
        raise missing(response_id)
    if head.tenant is not None:  # refuse before waiting for the views
        require_tenant(caller, head.tenant, f"Response with id '{response_id}' not found.")
    view, reader = await svc.reader.response_caught_up(response_id, head.seq)
    if view is None or not view.store:
        raise missing(response_id)
    require_tenant(caller, view.tenant, f"Response with id '{response_id}' not found.")
    return head, view, reader
