"""The AsyncAPI document of the event stream (no NATS server needed)."""

import asyncio
import json
import socket

import pytest

from events.asyncapi import asyncapi_json, asyncapi_schema
from events.schema import EVENT_TYPES
from events.subjects import subject_token


@pytest.fixture(scope="module")
def doc():
    return asyncapi_schema()


def _channel(doc, event_type):
    address = f"conv.{{conversation_id}}.{subject_token(event_type)}"
    found = [c for c in doc["channels"].values() if c["address"] == address]
    assert len(found) == 1, f"no single channel for {event_type} at {address}"
    return found[0]


def _resolve(doc, ref):
    node = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _payload(doc, event_type):
    (ref,) = _channel(doc, event_type)["messages"].values()
    return _resolve(doc, _resolve(doc, ref["$ref"])["payload"]["$ref"])


def test_document_header(doc):
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "convstore events"
    assert doc["info"]["version"] == "0.1.0"
    assert "CONVSTORE" in doc["info"]["description"]


def test_a_channel_per_event_type(doc):
    assert len(doc["channels"]) == len(EVENT_TYPES)
    assert _channel(doc, "ItemAdded")["address"] == "conv.{conversation_id}.item_added"
    for event_type in EVENT_TYPES:
        channel = _channel(doc, event_type)
        assert "conversation_id" in channel["parameters"]
        assert "Nats-Msg-Id" in channel["description"]
        assert "Convstore-Event-Type" in channel["description"]
        assert "CONVSTORE" in channel["description"]
        assert f"conv.*.{subject_token(event_type)}" in channel["description"]
        assert _payload(doc, event_type)["properties"]["type"]["const"] == event_type


def test_operations_are_sends_of_the_store(doc):
    for operation in doc["operations"].values():
        assert operation["action"] == "send"
        assert _resolve(doc, operation["channel"]["$ref"]) in doc["channels"].values()


def test_item_added_payload(doc):
    payload = _payload(doc, "ItemAdded")
    for field in ("item", "conversation_id", "id", "time", "actor", "schema_version", "type"):
        assert field in payload["properties"], field
    assert {"item", "conversation_id"} <= set(payload["required"])
    assert "seq" not in payload["properties"]  # never on the wire


def test_message_headers(doc):
    (ref,) = _channel(doc, "ItemDeleted")["messages"].values()
    headers = _resolve(doc, ref["$ref"])["headers"]
    assert headers["properties"]["Convstore-Event-Type"]["const"] == "ItemDeleted"
    assert set(headers["required"]) == {"Nats-Msg-Id", "Convstore-Event-Type", "Convstore-Hash"}


def test_json_round_trips():
    text = asyncapi_json()
    assert json.loads(text) == asyncapi_schema()


def test_generation_opens_no_connection(monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("network connection attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(asyncio.BaseEventLoop, "create_connection", refuse)
    assert asyncapi_schema()["channels"]
    assert asyncapi_json()
    assert attempts == []
