"""The OpenAPI document: request bodies, success bodies and error answers as they really
are, so clients and the fuzz run (tests/test_fuzz.py) can hold the API to them.

Handlers validate bodies themselves (OpenAI's wording) and return plain dicts, so the
schemas are attached here rather than to the routes: no validation or serialisation cost
per request. A /v1 route not in BODIES/RESULTS still gets the error answers and the
Idempotency-Key header; add its shapes to the tables.
"""

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

from api.idempotency import MAX_KEY_LENGTH
from api.routes.events import MAX_POSITION
from api.validation import MAX_ITEMS, MAX_METADATA_KEY, MAX_METADATA_PAIRS, MAX_METADATA_VALUE

Metadata = dict[str, str]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class Error(BaseModel):
    """OpenAI's error body."""

    error: ErrorDetail


class Conversation(BaseModel):
    id: str
    object: Literal["conversation"]
    created_at: int
    metadata: Metadata


class ConversationDeleted(BaseModel):
    id: str
    object: Literal["conversation.deleted"]
    deleted: bool


class Item(BaseModel):
    """A stored item: one of OpenAI's item types, with its id."""

    model_config = ConfigDict(extra="allow")
    id: str
    type: str


class ItemList(BaseModel):
    object: Literal["list"]
    data: list[Item]
    first_id: str | None
    last_id: str | None
    has_more: bool


class ConversationList(ItemList):
    data: list[Conversation]  # type: ignore[assignment]


class Event(BaseModel):
    """A stored event plus its log position (README, Events)."""

    model_config = ConfigDict(extra="allow")
    object: Literal["event"]
    seq: int
    id: str
    type: str
    conversation_id: str
    time: str
    schema_version: int
    actor: dict[str, Any]
    prev_hash: str
    hash: str


class EventList(BaseModel):
    object: Literal["list"]
    data: list[Event]
    first_id: int | None
    last_id: int | None
    has_more: bool


class Health(BaseModel):
    status: str
    checks: dict[str, Any] | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["input_text", "output_text", "text", "input_image", "image_url"]
    text: str | None = None


class InputMessage(BaseModel):
    """A message item (other OpenAI item types are accepted too, see the README)."""

    model_config = ConfigDict(extra="allow")
    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


InputItems = list[InputMessage | dict[str, Any]]
MetadataField = Field(
    None,
    max_length=MAX_METADATA_PAIRS,
    description=f"at most {MAX_METADATA_PAIRS} pairs; keys up to {MAX_METADATA_KEY} characters, "
    f"values up to {MAX_METADATA_VALUE}",
)


class CreateConversation(BaseModel):
    metadata: Metadata | None = MetadataField
    items: InputItems | None = Field(None, max_length=MAX_ITEMS)


class UpdateConversation(BaseModel):
    metadata: Metadata | None = Field(..., description="replaces the metadata (no merge)")


class CreateItems(BaseModel):
    items: InputItems = Field(min_length=1, max_length=MAX_ITEMS)


class ConversationRef(BaseModel):
    id: str


class CreateResponse(BaseModel):
    """OpenAI's other parameters are accepted and not acted on; one OpenAI does not know is
    a 400 `unknown_parameter` (`api/response_params.KNOWN`)."""

    model_config = ConfigDict(extra="allow")
    model: str
    input: str | InputItems
    instructions: str | None = None
    conversation: str | ConversationRef | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    stream: bool | None = None
    background: bool | None = None
    metadata: Metadata | None = MetadataField
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_output_tokens: int | None = Field(None, ge=16)
    tools: list[dict[str, Any]] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    text: dict[str, Any] | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None


class Response(BaseModel):
    """OpenAI's Response object (every field is present; see README, Responses)."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["response"]
    created_at: int
    status: Literal["queued", "in_progress", "completed", "incomplete", "failed", "cancelled"]
    model: str
    output: list[Item]
    error: dict[str, Any] | None
    incomplete_details: dict[str, Any] | None
    conversation: ConversationRef | None
    previous_response_id: str | None
    background: bool
    store: bool
    metadata: Metadata
    usage: dict[str, Any] | None


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response.deleted"]
    deleted: bool


CONV = "/v1/conversations/{conversation_id}"
RESP = "/v1/responses/{response_id}"
BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("post", "/v1/conversations"): CreateConversation,
    ("post", CONV): UpdateConversation,
    ("post", f"{CONV}/items"): CreateItems,
    ("post", "/v1/responses"): CreateResponse,
}
RESULTS: dict[tuple[str, str], type[BaseModel]] = {
    ("post", "/v1/conversations"): Conversation,
    ("get", "/v1/conversations"): ConversationList,
    ("get", CONV): Conversation,
    ("post", CONV): Conversation,
    ("delete", CONV): ConversationDeleted,
    ("post", f"{CONV}/items"): ItemList,
    ("get", f"{CONV}/items"): ItemList,
    ("get", f"{CONV}/items/{{item_id}}"): Item,
    ("delete", f"{CONV}/items/{{item_id}}"): Conversation,
    ("get", f"{CONV}/events"): EventList,
    ("get", "/v1/events"): EventList,
    ("post", "/v1/responses"): Response,
    ("get", RESP): Response,
    ("delete", RESP): ResponseDeleted,
    ("post", f"{RESP}/cancel"): Response,
    ("get", f"{RESP}/input_items"): ItemList,
    ("get", "/healthz"): Health,
    ("get", "/readyz"): Health,
}
# One server-sent event of a stream. Before Open API 3.2 (`itemSchema`), the `schema` of
# an event stream describes each event, as schemathesis reads it: `data` is the event as
# JSON (OpenAI's streaming event shapes, or a stored event with its `id` as the position).
SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"type": "string"},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": {"type": "object"},
        },
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
    "required": ["data"],
}
STREAMS = {
    ("get", f"{CONV}/events"),
    ("get", "/v1/events"),
    ("post", "/v1/responses"),
    ("get", RESP),
}
ERRORS = {
    400: "Invalid request (OpenAI's wording; `param` names the field)",
    401: "Missing or unknown API key (`invalid_api_key`)",
    403: "The operation needs an admin key (`insufficient_permissions`)",
    404: "Not found; also another tenant's resource, with the very same body",
    409: "Idempotency-Key reused with another body, or still in progress; or write contention",
    413: "Body over the size limit, or an event larger than a NATS message",
    429: "Rate limit of the API key (`rate_limit_exceeded`, with Retry-After)",
    503: "NATS unreachable or the views behind (`service_unavailable`, with Retry-After)",
}


def _query_schema(path: str, name: str) -> dict[str, Any] | None:
    """The bounds the handlers enforce, so negative fuzzing aims right past them."""
    if name == "limit":
        return {"type": "integer", "minimum": 1, "maximum": 100}
    if name == "order":
        return {"type": "string", "enum": ["asc", "desc"]}
    if name == "after" and path.endswith("/events"):
        return {"type": "integer", "minimum": 0, "maximum": MAX_POSITION}
    return None


def _statuses(method: str, path: str) -> list[int]:
    if not path.startswith("/v1/"):
        return [503] if path == "/readyz" else []
    out = [400, 401, 429, 503]
    if "{" in path or path == "/v1/responses":  # a response's conversation may not exist
        out.append(404)
    if method == "post":
        out += [409, 413]
    if path == "/v1/events":
        out.append(403)
    return sorted(out)


def _ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, str]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def document(app: FastAPI) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=app.description,
        routes=app.routes,
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    error = _ref(Error, components)
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            for param in op.get("parameters", []):
                bounded = _query_schema(path, param["name"]) if param["in"] == "query" else None
                if bounded is not None:
                    param["schema"] = bounded
            if (method, path) in RESULTS:
                content = _json(_ref(RESULTS[method, path], components))
                if (method, path) in STREAMS:
                    content["text/event-stream"] = {"schema": SSE_EVENT}
                responses["200"] = {"description": "Success", "content": content}
            if (method, path) in BODIES:
                body = _ref(BODIES[method, path], components)
                op["requestBody"] = {"required": False, "content": _json(body)}
            for status in _statuses(method, path):
                responses[str(status)] = {
                    "description": ERRORS[status],
                    "content": _json(error)
                    if path.startswith("/v1/")
                    else _json(_ref(Health, components)),
                }
            if method == "post" and path.startswith("/v1/"):
                op.setdefault("parameters", []).append(
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "description": "a retry with the same key and body returns the first "
                        "answer and writes nothing (kept 24 h)",
                        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
                    }
                )
    return schema


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
