"""Conversation items: validation and normalisation to OpenAI's stored shapes.

Clients may send chat-style content (`"text"`, `"image_url"` parts, plain strings);
the log stores only the Responses item shapes (`input_text`, `output_text`,
`input_image`, ...), so every reader sees one form.
"""

from typing import Any

from events.ids import ITEM_ID_PREFIXES, new_item_id

MAX_TEXT_CHARS = 10 * 1024 * 1024  # OpenAI's maximum string length for input text
ROLES = ("user", "assistant", "system", "developer")
STATUSES = ("in_progress", "completed", "incomplete")
PHASES = ("commentary", "final_answer")  # an assistant message's `phase`
INPUT_PARTS = ("input_text", "input_image", "input_file")
OUTPUT_PARTS = ("output_text", "refusal")
IMAGE_DETAILS = ("auto", "low", "high")
# Accepted by `type` and stored as sent (plus id/status); the strictly validated
# types are handled by the functions below.
OTHER_TYPES = frozenset(ITEM_ID_PREFIXES) - {
    "message",
    "function_call",
    "function_call_output",
    "reasoning",
}


class ItemError(ValueError):
    """An item that OpenAI would reject: `param` names the offending field."""

    def __init__(self, message: str, param: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def quote_list(values: tuple[str, ...] | list[str]) -> str:
    quoted = [f"'{v}'" for v in values]
    return (
        ", ".join(quoted[:-1]) + f", and {quoted[-1]}" if len(quoted) > 2 else " and ".join(quoted)
    )


def _missing(param: str, key: str) -> ItemError:
    return ItemError(
        f"Missing required parameter: '{param}.{key}'.",
        f"{param}.{key}",
        "missing_required_parameter",
    )


def type_name(value: Any) -> str:
    """A JSON value's type as OpenAI's messages name it (not Python's: `NoneType`, `int`)."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}
    if value is None:
        return "null"
    return names.get(type(value), "object" if isinstance(value, dict) else type(value).__name__)


def _require_str(obj: dict[str, Any], key: str, param: str, *, optional: bool = False) -> None:
    value = obj.get(key)
    if value is None:
        if optional:
            return
        raise _missing(param, key)
    if not isinstance(value, str):
        raise ItemError(
            f"Invalid type for '{param}.{key}': expected a string, but got "
            f"{type_name(value)} instead.",
            f"{param}.{key}",
            "invalid_type",
        )
    if len(value) > MAX_TEXT_CHARS:
        raise ItemError(
            f"Invalid '{param}.{key}': string too long. Expected a string with maximum length "
            f"{MAX_TEXT_CHARS}, but got a string with length {len(value)} instead.",
            f"{param}.{key}",
            "string_above_max_length",
        )


def _enum(obj: dict[str, Any], key: str, allowed: tuple[str, ...], param: str) -> None:
    value = obj.get(key)
    if value is None:
        raise _missing(param, key)
    if value not in allowed:
        raise ItemError(
            f"Invalid value: '{value}'. Supported values are: {quote_list(allowed)}.",
            f"{param}.{key}",
        )


def _content_part(part: Any, role: str, param: str) -> dict[str, Any]:
    if isinstance(part, str):
        part = {"type": "text", "text": part}
    if not isinstance(part, dict):
        raise ItemError(f"Invalid type for '{param}': expected an object.", param, "invalid_type")
    raw, sent = part, part.get("type")
    kind = sent
    assistant = role == "assistant"
    if kind == "text":
        kind = "output_text" if assistant else "input_text"
    elif kind == "image_url":
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        detail = image.get("detail", "auto") if isinstance(image, dict) else "auto"
        part = {"type": "input_image", "image_url": url, "detail": detail}
        kind = "input_image"
    allowed = OUTPUT_PARTS if assistant else INPUT_PARTS
    if kind not in allowed:
        raise ItemError(
            f"Invalid value: '{kind}'. Supported values are: {quote_list(allowed)}.",
            f"{param}.type",
        )
    _known(raw, sent, param, _PART_FIELDS)
    if kind in ("input_text", "output_text"):
        _require_str(part, "text", param)
        out: dict[str, Any] = {"type": kind, "text": part["text"]}
        if kind == "output_text":
            out["annotations"] = list(part.get("annotations") or [])
            if part.get("logprobs") is not None:
                out["logprobs"] = part["logprobs"]
        return out
    if kind == "refusal":
        _require_str(part, "refusal", param)
        return {"type": "refusal", "refusal": part["refusal"]}
    if kind == "input_image":
        _require_str(part, "image_url", param, optional=True)
        _require_str(part, "file_id", param, optional=True)
        if not part.get("image_url") and not part.get("file_id"):
            raise _missing(param, "image_url")
        part.setdefault("detail", "auto")
        _enum(part, "detail", IMAGE_DETAILS, param)
        keep = ("type", "image_url", "file_id", "detail")
        return {k: part.get(k) for k in keep}
    # input_file
    for key in ("file_id", "file_data", "file_url", "filename"):
        _require_str(part, key, param, optional=True)
    if not any(part.get(k) for k in ("file_id", "file_data", "file_url")):
        raise _missing(param, "file_id")
    return {
        k: v
        for k, v in part.items()
        if k in ("type", "file_id", "file_data", "file_url", "filename", "detail")
    }


def _message(item: dict[str, Any], param: str) -> dict[str, Any]:
    _enum(item, "role", ROLES, param)
    role = item["role"]
    content = item.get("content")
    if content is None:
        raise _missing(param, "content")
    if isinstance(content, str):
        _require_str(item, "content", param)
        parts = [_content_part(content, role, f"{param}.content[0]")]
    elif isinstance(content, list):
        parts = [_content_part(p, role, f"{param}.content[{i}]") for i, p in enumerate(content)]
    else:
        raise ItemError(
            f"Invalid type for '{param}.content': expected one of a string or array of objects.",
            f"{param}.content",
            "invalid_type",
        )
    status = "completed" if item.get("status") is None else item["status"]
    if status not in STATUSES:
        _enum(item, "status", STATUSES, param)
    message = {"type": "message", "status": status, "role": role, "content": parts}
    if item.get("phase") is not None:  # OpenAI's label of an assistant message, kept as sent
        _enum(item, "phase", PHASES, param)
        message["phase"] = item["phase"]
    return message


def _function_call(item: dict[str, Any], param: str) -> dict[str, Any]:
    for key in ("call_id", "name", "arguments"):
        _require_str(item, key, param)
    status = "completed" if item.get("status") is None else item["status"]
    if status not in STATUSES:
        _enum(item, "status", STATUSES, param)
    out = {k: item[k] for k in ("call_id", "name", "arguments")}
    if item.get("namespace") is not None:
        out["namespace"] = item["namespace"]
    return {"type": "function_call", "status": status, **out}


def _function_call_output(item: dict[str, Any], param: str) -> dict[str, Any]:
    _require_str(item, "call_id", param)
    output = item.get("output")
    if isinstance(output, str):
        _require_str(item, "output", param)
    elif isinstance(output, list):
        output = [_content_part(p, "user", f"{param}.output[{i}]") for i, p in enumerate(output)]
    else:
        raise ItemError(
            f"Invalid type for '{param}.output': expected one of a string or array of objects.",
            f"{param}.output",
            "invalid_type" if output is not None else "missing_required_parameter",
        )
    status = "completed" if item.get("status") is None else item["status"]
    if status not in STATUSES:
        _enum(item, "status", STATUSES, param)
    return {
        "type": "function_call_output",
        "status": status,
        "call_id": item["call_id"],
        "output": output,
    }


def _text_parts(parts: Any, kind: str, param: str) -> list[dict[str, Any]]:
    """An array of `{"type": kind, "text": ...}` parts (reasoning summary and content)."""
    if not isinstance(parts, list):
        raise ItemError(f"Invalid type for '{param}': expected an array.", param, "invalid_type")
    for i, part in enumerate(parts):
        p = f"{param}[{i}]"
        if not isinstance(part, dict) or part.get("type") != kind:
            raise ItemError(f"Invalid value for '{p}.type': expected '{kind}'.", f"{p}.type")
        _require_str(part, "text", p)
    return [{"type": kind, "text": part["text"]} for part in parts]


def _reasoning(item: dict[str, Any], param: str) -> dict[str, Any]:
    summary = item.get("summary")
    if summary is None:
        raise _missing(param, "summary")
    out: dict[str, Any] = {
        "type": "reasoning",
        "summary": _text_parts(summary, "summary_text", f"{param}.summary"),
    }
    if item.get("content") is not None:
        out["content"] = _text_parts(item["content"], "reasoning_text", f"{param}.content")
    _require_str(item, "encrypted_content", param, optional=True)
    if item.get("encrypted_content") is not None:
        out["encrypted_content"] = item["encrypted_content"]
    if item.get("status") is not None:
        _enum(item, "status", STATUSES, param)
        out["status"] = item["status"]
    return out


# Each strictly validated type's fields: the SDK's (tests/test_items.py checks them
# against the installed SDK) and our `created_at`, so a listed item can be sent back.
# Some are accepted and not kept (`async`, `caller`).
_FIELDS = {
    "message": frozenset({"type", "id", "role", "content", "status", "phase", "created_at"}),
    "function_call": frozenset(
        {"type", "id", "call_id", "name", "arguments", "status", "namespace", "async", "caller"}
        | {"created_at"}
    ),
    "function_call_output": frozenset(
        {"type", "id", "call_id", "output", "status", "name", "namespace", "caller"}
        | {"created_at"}
    ),
    "reasoning": frozenset(
        {"type", "id", "summary", "content", "encrypted_content", "status", "created_at"}
    ),
    "item_reference": frozenset({"type", "id"}),
}


# Each content part's fields, likewise (the chat-style `text` and `image_url` parts are
# Chat Completions'). `prompt_cache_breakpoint` is accepted and not kept.
_PART_FIELDS = {
    "input_text": frozenset({"type", "text", "prompt_cache_breakpoint"}),
    "output_text": frozenset({"type", "text", "annotations", "logprobs"}),
    "refusal": frozenset({"type", "refusal"}),
    "input_image": frozenset({"type", "image_url", "file_id", "detail", "prompt_cache_breakpoint"}),
    "input_file": frozenset(
        {"type", "file_id", "file_data", "file_url", "filename", "detail"}
        | {"prompt_cache_breakpoint"}
    ),
    "text": frozenset({"type", "text"}),
    "image_url": frozenset({"type", "image_url"}),
}


def _known(
    item: dict[str, Any],
    kind: str,
    param: str,
    fields: dict[str, frozenset[str]] = _FIELDS,
) -> None:
    """OpenAI refuses a field it does not know; dropping it silently would lose what the
    client meant to store."""
    for key in item:
        if key not in fields[kind]:
            raise ItemError(
                f"Unknown parameter: '{param}.{key}'.", f"{param}.{key}", "unknown_parameter"
            )


_STRICT = {
    "message": _message,
    "function_call": _function_call,
    "function_call_output": _function_call_output,
    "reasoning": _reasoning,
}


REFERENCE = "item_reference"


def is_reference(item: dict[str, Any]) -> bool:
    """An `item_reference` as normalize_item returns it: the API resolves it to a copy
    of the stored item before anything is appended, so the log never holds one."""
    return item.get("type") == REFERENCE


def duplicate_id(raws: list[Any]) -> str | None:
    """The first id that two input items share (references included), if any: OpenAI
    refuses such an input rather than pick one."""
    seen: set[Any] = set()
    for raw in raws:
        item_id = raw.get("id") if isinstance(raw, dict) else None
        if isinstance(item_id, str):
            if item_id in seen:
                return item_id
            seen.add(item_id)
    return None


def duplicate_message(item_id: str) -> str:
    return (
        f"Duplicate item found with id {item_id}. Remove duplicate items from your input "
        "and try again."
    )


def has_reference(items: list[dict[str, Any]]) -> bool:
    return any(is_reference(item) for item in items)


def _reference(raw: dict[str, Any], param: str) -> dict[str, Any]:
    _known(raw, REFERENCE, param)
    _require_str(raw, "id", param)
    return {"type": REFERENCE, "id": raw["id"]}


def copy_item(stored: dict[str, Any], created_at: int, thread: str) -> dict[str, Any]:
    """A stored item added again (an item_reference resolved): the same content under
    a new id of `thread`, as each item of a thread has an id of its own."""
    body = {k: v for k, v in stored.items() if k not in ("id", "created_at")}
    return {"id": new_item_id(str(stored.get("type")), thread), **body, "created_at": created_at}


def normalize_item(raw: Any, param: str, created_at: int, thread: str) -> dict[str, Any]:
    """Validate one input item and return its stored form, with a fresh id of `thread`
    (the conversation, or the response without one, that the item is added to).

    A message without `type` is accepted (the SDK's EasyInputMessage shape). An
    `item_reference` (also one with no `type`, only an `id`, as the SDK allows) comes back
    as `{"type": "item_reference", "id": ...}`: see is_reference.
    """
    if not isinstance(raw, dict):
        raise ItemError(f"Invalid type for '{param}': expected an object.", param, "invalid_type")
    kind = raw.get("type")
    if "type" not in raw and "role" in raw:
        kind = "message"  # the SDK's EasyInputMessage
    elif kind is None and "role" not in raw and "id" in raw:
        kind = REFERENCE  # the SDK's ItemReference: its `type` is optional, null included
    if kind is None:
        raise _missing(param, "type")
    if not isinstance(kind, str):
        raise ItemError(
            f"Invalid type for '{param}.type': expected a string, but got "
            f"{type(kind).__name__} instead.",
            f"{param}.type",
            "invalid_type",
        )
    if kind == REFERENCE:
        return _reference(raw, param)
    if kind in _STRICT:
        _known(raw, kind, param)
        body = _STRICT[kind](raw, param)
    elif kind in OTHER_TYPES:
        body = {k: v for k, v in raw.items() if k not in ("id", "created_at")}
    else:
        supported = tuple(sorted(set(_STRICT) | OTHER_TYPES | {REFERENCE}))
        raise ItemError(
            f"Invalid value: '{kind}'. Supported values are: {quote_list(supported)}.",
            f"{param}.type",
        )
    return {"id": new_item_id(str(kind), thread), **body, "created_at": created_at}


def orphan_output(items: list[dict[str, Any]], first: int = 0) -> str | None:
    """The call_id of the first `function_call_output` at or after index `first` of
    `items` (a context, oldest first) with no `function_call` of that call_id before it,
    if any: OpenAI refuses such a request, and a Chat Completions upstream its tool
    message. Outputs before `first` (stored earlier) are not this request's to answer for."""
    calls: set[Any] = set()
    for n, item in enumerate(items):
        kind = item.get("type")
        if kind == "function_call":
            calls.add(item.get("call_id"))
        elif kind == "function_call_output" and n >= first and item.get("call_id") not in calls:
            return str(item.get("call_id"))
    return None


def orphan_message(call_id: str) -> str:
    return f"No tool call found for function call output with call_id {call_id}."
