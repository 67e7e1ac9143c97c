"""Request validation with OpenAI's limits and error wording."""

from datetime import UTC, datetime
from typing import Any, Literal

from api.errors import invalid, not_found
from events.items import duplicate_id, duplicate_message, normalize_item, type_name
from events.subjects import is_safe_id

MAX_ITEMS = 20
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
INCLUDABLE = frozenset(
    {
        "web_search_call.action.sources",
        "web_search_call.results",
        "code_interpreter_call.outputs",
        "computer_call_output.output.image_url",
        "file_search_call.results",
        "message.input_image.image_url",
        "message.output_text.logprobs",
        "reasoning.encrypted_content",
    }
)


MAX_DEPTH = 64  # nesting of arrays and objects in a body


def known(body: dict[str, Any], allowed: frozenset[str], within: str = "") -> None:
    """OpenAI refuses a body parameter it does not know, so a misspelt one is a 400 rather
    than a setting silently dropped. `within`: the parameter `body` is, for nested ones."""
    for key in body:
        if key not in allowed:
            name = f"{within}.{key}" if within else key
            raise invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")


def wrong_type(param: str, expected: str, value: Any) -> Exception:
    return invalid(
        f"Invalid type for '{param}': expected {expected}, but got {type_name(value)} instead.",
        param,
        "invalid_type",
    )


def optional_string(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise wrong_type(key, "a string", value)
    return value


def encodable(value: Any, param: str = "", max_chars: int | None = None) -> None:
    """Reject strings JSON can carry but UTF-8 cannot (lone surrogates such as \\ud800),
    strings longer than `max_chars`, and nesting deeper than MAX_DEPTH. Iterative, so no
    body can exhaust the interpreter's stack."""
    stack: list[tuple[Any, str, int]] = [(value, param, 0)]
    while stack:
        value, param, depth = stack.pop()
        if isinstance(value, str):
            _string(value, param, max_chars)
            continue
        if isinstance(value, dict):
            children = [(v, f"{param}.{k}" if param else str(k)) for k, v in value.items()]
            for key in value:
                _string(key, param, max_chars)
        elif isinstance(value, list):
            children = [(v, f"{param}[{n}]") for n, v in enumerate(value)]
        else:
            continue
        if depth >= MAX_DEPTH:
            raise invalid(
                f"Invalid '{param or 'body'}': nested too deeply. Expected at most "
                f"{MAX_DEPTH} levels of arrays and objects.",
                param or None,
                "nesting_too_deep",
            )
        stack.extend((v, p, depth + 1) for v, p in reversed(children))


def _string(value: str, param: str, max_chars: int | None) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise invalid(
            f"Invalid '{param or 'body'}': the string is not valid Unicode (lone surrogate).",
            param or None,
        ) from None
    if max_chars is not None and len(value) > max_chars:
        raise invalid(
            f"Invalid '{param or 'body'}': string too long. Expected a string with maximum "
            f"length {max_chars}, but got a string with length {len(value)} instead.",
            param or None,
            "string_above_max_length",
        )


def cursor(after: str | None) -> str | None:
    """An `after` that cannot be an id names nothing: a 400, like an unknown id."""
    if after is not None and not is_safe_id(after):
        raise invalid(f"Invalid 'after': no object with id '{after}'.", "after")
    return after


def metadata(value: Any, param: str = "metadata") -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(
            f"Invalid type for '{param}': expected an object, but got {type_name(value)} instead.",
            param,
            "invalid_type",
        )
    if len(value) > MAX_METADATA_PAIRS:
        raise invalid(
            f"Invalid '{param}': too many properties. Expected an object with at most "
            f"{MAX_METADATA_PAIRS} properties, but got an object with {len(value)} properties "
            "instead.",
            param,
            "object_above_max_properties",
        )
    for key, val in value.items():
        if len(key) > MAX_METADATA_KEY:
            raise invalid(
                f"Invalid '{param}': key too long. Expected a key with maximum length "
                f"{MAX_METADATA_KEY}, but got a key with length {len(key)} instead.",
                param,
                "string_above_max_length",
            )
        if not isinstance(val, str):
            raise invalid(
                f"Invalid type for '{param}.{key}': expected a string, but got "
                f"{type_name(val)} instead.",
                f"{param}.{key}",
                "invalid_type",
            )
        if len(val) > MAX_METADATA_VALUE:
            raise invalid(
                f"Invalid '{param}.{key}': string too long. Expected a string with maximum "
                f"length {MAX_METADATA_VALUE}, but got a string with length {len(val)} instead.",
                f"{param}.{key}",
                "string_above_max_length",
            )
    return dict(value)


def items(value: Any, created_at: int, thread: str, *, required: bool) -> list[dict[str, Any]]:
    """Validate and normalise an `items` array (at most 20) to be added to `thread`."""
    if value is None:
        if required:
            raise invalid(
                "Missing required parameter: 'items'.", "items", "missing_required_parameter"
            )
        return []
    if not isinstance(value, list):
        raise invalid(
            f"Invalid type for 'items': expected an array, but got {type_name(value)} instead.",
            "items",
            "invalid_type",
        )
    if required and not value:
        raise invalid(
            "Invalid 'items': empty array. Expected an array with minimum length 1, "
            "but got an empty array instead.",
            "items",
            "empty_array",
        )
    if len(value) > MAX_ITEMS:
        raise invalid(
            f"Invalid 'items': array too long. Expected an array with maximum length "
            f"{MAX_ITEMS}, but got an array with length {len(value)} instead.",
            "items",
            "array_above_max_length",
        )
    items = [normalize_item(raw, f"items[{i}]", created_at, thread) for i, raw in enumerate(value)]
    no_duplicate(value, "items")
    return items


def no_duplicate(raws: list[Any], param: str) -> None:
    """OpenAI's 400 for two input items (references included) with one id."""
    item_id = duplicate_id(raws)
    if item_id is not None:
        raise invalid(duplicate_message(item_id), param, None)


def include(values: list[str] | None) -> list[str]:
    for value in values or []:
        if value not in INCLUDABLE:
            supported = ", ".join(f"'{v}'" for v in sorted(INCLUDABLE))
            raise invalid(
                f"Invalid value: '{value}'. Supported values are: {supported}.", "include"
            )
    return list(values or [])


def page(limit: int | None, order: str | None) -> tuple[int, Literal["asc", "desc"]]:
    limit = 20 if limit is None else limit
    if limit < 1:
        raise invalid(
            f"Invalid 'limit': integer below minimum value. Expected a value >= 1, "
            f"but got {limit} instead.",
            "limit",
            "integer_below_min_value",
        )
    if limit > 100:
        raise invalid(
            f"Invalid 'limit': integer above maximum value. Expected a value <= 100, "
            f"but got {limit} instead.",
            "limit",
            "integer_above_max_value",
        )
    order = order or "desc"
    if order not in ("asc", "desc"):
        raise invalid(f"Invalid value: '{order}'. Supported values are: 'asc' and 'desc'.", "order")
    return limit, order  # type: ignore[return-value]


def conversation_id(value: str) -> str:
    """Ids become subject tokens: anything else cannot exist, so it is simply not found. Only
    a conversation's id names a conversation: a response made without one is a thread of
    the log too (`resp_...`), and a conversation route must not read or write it."""
    if not value.startswith("conv_") or not is_safe_id(value):
        raise not_found(f"Conversation with id '{value}' not found.")
    return value


def thread_id(value: str) -> str:
    """A conversation's id, or a response's made without one (its own thread): what the
    read-only events route of a conversation also takes."""
    if value.startswith("resp_") and is_safe_id(value):
        return value
    return conversation_id(value)


def item_id(value: str) -> str:
    if not is_safe_id(value):
        raise not_found(f"Item with id '{value}' not found.")
    return value


def as_of(value: str | None) -> tuple[int | None, datetime | None] | None:
    """`as_of`: a log position (digits) or an RFC 3339 time (UTC when no offset is given)."""
    if value is None:
        return None
    if value.isdigit():
        return int(value), None
    try:
        if "T" not in value.upper():
            raise ValueError("a date and a time are needed")
        when = datetime.fromisoformat(value.upper())  # RFC 3339 allows 't' and 'z'
    except ValueError:
        raise invalid(
            f"Invalid 'as_of': '{value}' is neither a log position nor an RFC 3339 time.",
            "as_of",
        ) from None
    return None, when if when.tzinfo else when.replace(tzinfo=UTC)
