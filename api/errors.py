"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` for every failure."""

import logging
from typing import Any

import nats.errors
import nats.js.errors
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.request_id import request_id
from events.commands import ConversationNotFound, TooMuchContention
from events.items import ItemError
from events.store import UNAVAILABLE, EventTooLarge, StoreUnavailable
from projections.reader import ProjectionLagging

log = logging.getLogger("convstore.api")


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type, "param": param, "code": code}}
        self.headers = headers


def invalid(message: str, param: str | None, code: str | None = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def not_json() -> APIError:
    return invalid(
        "We could not parse the JSON body of your request. (HINT: This likely means you "
        "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
        "but what was sent was not valid JSON.)",
        None,
        None,
    )


def not_found(message: str) -> APIError:
    return APIError(404, message)


def unavailable(message: str) -> APIError:
    return APIError(
        503, message, type="server_error", code="service_unavailable", headers={"Retry-After": "1"}
    )


def _response(err: APIError) -> JSONResponse:
    return JSONResponse(err.body, status_code=err.status, headers=err.headers)


def _validation_error(exc: RequestValidationError) -> APIError:
    first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    if first.get("type") == "json_invalid":
        return not_json()
    param = ".".join(loc) or None
    if param is None:
        return invalid("Invalid request body: expected a JSON object.", None)
    if first.get("type") == "missing":
        return invalid(
            f"Missing required parameter: '{param}'.", param, "missing_required_parameter"
        )
    return invalid(f"Invalid '{param}': {first.get('msg', 'invalid value')}.", param)


def _json_type(content_type: str) -> bool:
    """The media types FastAPI reads a body from as JSON."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _about_body(exc: RequestValidationError) -> bool:
    first: dict[str, Any] = exc.errors()[0] if exc.errors() else {}
    return tuple(first.get("loc", ()))[:1] == ("body",)


def _unsupported_type(content_type: str) -> APIError:
    """A JSON body sent as another type is not read at all; saying so beats "expected a
    JSON object" about a body that is one."""
    return invalid(
        f"Unsupported content type: '{content_type}'. This endpoint takes a JSON body: "
        "send it with 'Content-Type: application/json'.",
        None,
        None,
    )


NATS_DOWN = (StoreUnavailable, nats.errors.NoServersError, *UNAVAILABLE)


def install(app: FastAPI) -> None:
    """Map every exception the API can meet to an OpenAI error body."""

    @app.exception_handler(APIError)
    async def _api(_: Request, exc: APIError) -> JSONResponse:
        return _response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        kind = request.headers.get("content-type")
        if kind is not None and not _json_type(kind) and _about_body(exc):
            return _response(_unsupported_type(kind))
        return _response(_validation_error(exc))

    @app.exception_handler(ItemError)
    async def _item(_: Request, exc: ItemError) -> JSONResponse:
        return _response(invalid(exc.message, exc.param, exc.code))

    @app.exception_handler(ConversationNotFound)
    async def _conv(_: Request, exc: ConversationNotFound) -> JSONResponse:
        return _response(not_found(str(exc)))

    @app.exception_handler(EventTooLarge)
    async def _large(_: Request, exc: EventTooLarge) -> JSONResponse:
        return _response(APIError(413, f"Request too large: {exc}.", code="request_too_large"))

    @app.exception_handler(ProjectionLagging)
    async def _lag(_: Request, exc: ProjectionLagging) -> JSONResponse:
        return _response(unavailable(f"The store is catching up: {exc}."))

    @app.exception_handler(TooMuchContention)
    async def _contention(_: Request, exc: TooMuchContention) -> JSONResponse:
        return _response(
            APIError(
                409,
                f"Too many concurrent writes to conversation '{exc}'; retry.",
                code="conflict",
                headers={"Retry-After": "1"},
            )
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "Invalid URL or method." if exc.status_code in (404, 405) else str(exc.detail)
        return _response(APIError(exc.status_code, message))

    async def _down(_: Request, exc: Exception) -> JSONResponse:
        return _response(unavailable("The event store is unreachable; retry shortly."))

    # One handler per class, not the catch-all below: Starlette re-raises whatever
    # reaches that one, and uvicorn then logs a traceback and closes the keep-alive
    # connection, so a client's next request on it fails with no answer at all.
    for down in NATS_DOWN:
        app.add_exception_handler(down, _down)

    @app.exception_handler(Exception)
    async def _other(request: Request, exc: Exception) -> JSONResponse:
        # On FastAPI's path Starlette answers this outside every middleware, so the id
        # is added here (the fast lane calls it inside RequestId, which then adds none).
        rid = request_id(request.scope)
        log.exception("unhandled error (request %s)", rid)
        response = _response(
            APIError(500, "The server had an error processing your request.", type="server_error")
        )
        if rid:
            response.headers["x-request-id"] = rid
        return response
