"""Reading a conversation by id, as every conversation and items route and an item
reference to a conversation's item do."""

from typing import Any

from api import validation
from api.auth import require_tenant
from api.errors import not_found
from api.keys import Principal
from api.services import Services
from api.tenancy import conversation_not_found, owned_live_head
from events.history import History
from projections.point_in_time import reader_as_of
from projections.reader import ViewReader
from projections.views import ConversationView


async def conversation_reader(
    svc: Services,
    caller: Principal,
    conversation_id: str,
    as_of: str | None,
    also: dict[str, Any] | None = None,
) -> tuple[ConversationView, ViewReader]:
    """The live view (read-your-writes), or the view as of a log position or time; either
    only of a conversation of the caller's tenant. `also`: see `ViewReader.caught_up`."""
    point = validation.as_of(as_of)
    if point is None:
        head = owned_live_head(svc.store, caller, conversation_id)
        view, reader = await svc.reader.caught_up(conversation_id, head, also)
        if view.deleted:  # a log written before deletes were sticky on the head (0.x)
            raise not_found(conversation_not_found(conversation_id))
        return view, reader
    if also is not None:
        also.clear()
    reader = await reader_as_of(History(svc.store), conversation_id, seq=point[0], time=point[1])
    view = await reader.conversation(conversation_id)
    if view is None or view.deleted:
        raise not_found(conversation_not_found(conversation_id))
    require_tenant(caller, view.tenant, conversation_not_found(conversation_id))
    return view, reader
