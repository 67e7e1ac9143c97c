"""Pure fold of response events into a ResponseView (see projections/apply.py)."""

from typing import Any

from events.schema import (
    ResponseCancelled,
    ResponseCompleted,
    ResponseDeleted,
    ResponseEvent,
    ResponseFailed,
    ResponseInProgress,
    ResponseRequested,
)
from projections.views import ResponseView, response_input_key, response_key


def apply_response(
    view: ResponseView | None, event: ResponseEvent
) -> tuple[ResponseView | None, list[tuple[str, dict[str, Any] | None]]]:
    """The response view after `event`, and the keys to write (None = delete)."""
    if view is not None and event.seq <= view.last_seq:
        return view, []  # redelivered
    thread = event.conversation_id
    key = response_key(thread, event.response_id)
    if isinstance(event, ResponseRequested):
        if view is not None:
            return view, []
        view = ResponseView(
            id=event.response_id,
            thread=thread,
            tenant=event.tenant,
            conversation_id=thread if thread != event.response_id else None,
            created_at=event.created_at,
            model=event.model,
            instructions=event.instructions,
            previous_response_id=event.previous_response_id,
            background=event.background,
            store=event.store,
            metadata=event.metadata,
            params=event.params,
            context_seq=event.context_seq,
            request_seq=event.seq,
            last_seq=event.seq,
        )
        input_key = response_input_key(thread, event.response_id)
        return view, [(input_key, {"items": event.input}), (key, view.model_dump())]
    if view is None:
        return None, []  # a response these views never saw requested
    if isinstance(event, ResponseDeleted):
        return None, [(key, None), (response_input_key(thread, event.response_id), None)]
    update: dict[str, Any] = {"last_seq": event.seq}
    if not view.terminal:
        if isinstance(event, ResponseInProgress):
            update |= {
                "status": "in_progress",
                "attempt": event.attempt,
                "context_seq": event.context_seq,
            }
        elif isinstance(event, ResponseCompleted):
            update |= {
                "status": event.status,
                "output": event.output,
                "usage": event.usage,
                "incomplete_details": event.incomplete_details,
                "completed_at": event.completed_at,
            }
        elif isinstance(event, ResponseFailed):
            update |= {"status": "failed", "error": event.error}
        elif isinstance(event, ResponseCancelled):
            update |= {"status": "cancelled"}
    view = view.model_copy(update=update)
    return view, [(key, view.model_dump())]
