"""HTTP that cannot be parsed, answered as an OpenAI-shaped error like every other one.

uvicorn refuses a request its parser rejects (a header line without a colon, a bad
Transfer-Encoding) before the app sees it, with a text/plain 400. A client of an
OpenAI-compatible API reads every error as `{"error": {...}}` JSON, and the OpenAPI
document promises it; this protocol (uvicorn's own, passed as `http=`) answers those
requests with that body instead, and closes the connection as uvicorn does.
"""

import json

from uvicorn.protocols.http.auto import AutoHTTPProtocol

from api.errors import APIError


class JsonErrorsProtocol(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP/1.1 protocol (httptools, or h11 without it) with a JSON 400."""

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(APIError(400, msg).body).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()
