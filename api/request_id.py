"""`x-request-id` on every response, as OpenAI sends it (the SDK exposes it as
`_request_id`): a user who reports a failed call can name it, and the log line of an
unhandled error names the same id (`api/errors.py`)."""

import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"


def request_id(scope: Scope) -> str | None:
    """The id given to this request, when it passed through RequestId."""
    return scope.get("state", {}).get("request_id")  # type: ignore[no-any-return]


class RequestId:
    """Outermost middleware: names the request and adds the header to its response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = "req_" + secrets.token_hex(16)
        scope.setdefault("state", {})["request_id"] = rid
        header = (HEADER, rid.encode())

        async def named(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", ())
                # The 500 handler names it already when the fast lane, inside, called it.
                if not any(name.lower() == HEADER for name, _ in headers):
                    message["headers"] = [*headers, header]
            await send(message)

        await self.app(scope, receive, named)
