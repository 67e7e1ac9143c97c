"""Fuzz the API from its own OpenAPI document with schemathesis: valid and invalid requests
on every operation must get no 5xx and no answer outside the document (status, content
type, headers, body schema).

Short mode (the normal run): CONVSTORE_FUZZ_EXAMPLES examples per operation, default 15.
Long mode: `CONVSTORE_FUZZ_EXAMPLES=500 .venv/bin/pytest tests/test_fuzz.py -p no:cacheprovider`.
It runs against the secured replica, as tenant `fuzz`.
"""

import json
import os

import httpx
import jsonschema_rs
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from tests.servers import SECURE_KEYS

EXAMPLES = int(os.environ.get("CONVSTORE_FUZZ_EXAMPLES", "15"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
AUTH = {"Authorization": f"Bearer {SECURE_KEYS['fuzz']['key']}"}


# The document as the app builds it, without a server, so pytest can list the operations
# at collection (schemathesis's lazy fixture loader does not work with pytest 9); the test
# below checks that the served document is the same.
DOCUMENT = create_app(["nats://unused"]).openapi()
schema = schemathesis.openapi.from_dict(DOCUMENT)
schema.config.generation.update(
    modes=["positive", "negative"],
    max_examples=EXAMPLES,
    with_security_parameters=False,  # our key, below: fuzzing it would only ever be 401
)
schema = schema.exclude(path="/readyz")  # 503 while the projection is behind, by design


def test_the_served_document_is_the_fuzzed_one(secure_url):
    assert httpx.get(f"{secure_url}/openapi.json").json() == DOCUMENT


@schema.parametrize()
def test_no_5xx_and_no_answer_outside_the_openapi_document(case, secure_url):
    if case.query:
        case.query.pop("stream", None)  # an event stream never ends; tested elsewhere
    case.call_and_validate(base_url=secure_url, headers=AUTH, checks=CHECKS, timeout=30)


def test_a_response_stream_matches_the_documented_event_schema(secure_url):
    """Each server-sent event against what the document says one event is (schemathesis
    checks this too, but only when its generator happens to ask for a valid stream)."""
    operation = DOCUMENT["paths"]["/v1/responses"]["post"]
    item = operation["responses"]["200"]["content"]["text/event-stream"]["schema"]
    body = {"model": "gpt-4o-mini", "input": "hello", "stream": True}
    answer = httpx.post(f"{secure_url}/v1/responses", json=body, headers=AUTH, timeout=30)
    assert answer.status_code == 200, answer.text
    events = []
    for block in answer.text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append(fields)
    assert [e["event"] for e in events][:1] == ["response.created"]
    validator = jsonschema_rs.validator_for(item)
    for event in events:
        validator.validate(event)
        assert isinstance(json.loads(event["data"]), dict)
