"""A request uvicorn cannot parse gets the same OpenAI-shaped JSON error as any other bad
request (schemathesis sent one: a header line without a colon), not uvicorn's text/plain."""

import asyncio
import json
from urllib.parse import urlsplit

import pytest

MALFORMED = [
    b"POST /v1/conversations HTTP/1.1\r\nHost: x\r\nInfinity;\r\n\r\n",  # no colon
    b"POST /v1/conversations HTTP/1.1\r\nHost: x\r\ntransfer-encoding: ]\r\n\r\n",
    b"GET /v1/conversations/x HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n",  # space in name
]


@pytest.mark.parametrize("request_bytes", MALFORMED)
async def test_unparseable_http_gets_an_openai_shaped_400(api_url, request_bytes):
    parts = urlsplit(api_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(request_bytes)
        answer = await asyncio.wait_for(reader.read(), 10)  # the server closes after it
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 400 Bad Request"
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    assert set(error) == {"message", "type", "param", "code"}
