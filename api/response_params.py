"""`POST /v1/responses` body: validated the way OpenAI validates it.

A parameter OpenAI does not know is refused as OpenAI refuses it (`unknown_parameter`),
so a misspelt setting is a 400, not silently dropped. Those it knows are accepted; the
ones convstore implements are checked for type and range, so a bad request is a 400
naming the parameter, never a queued response that the worker then cannot run, and the
rest (`prompt`, `service_tier`, ...) are accepted and not acted on.
"""

from dataclasses import dataclass, field
from typing import Any

from api import validation
from api.errors import invalid
from events.ids import new_response_id
from events.items import normalize_item, orphan_message, orphan_output, quote_list

# Settings kept as sent in the request event and echoed in the Response object.
PASSTHROUGH = (
    "temperature",
    "top_p",
    "max_output_tokens",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "truncation",
    "user",
    "top_logprobs",
    "max_tool_calls",
    "reasoning",
    "prompt_cache_key",
    "safety_identifier",
)


# Every body parameter of the SDK's `responses.create` (tests/test_response_validation.py
# checks this against the installed SDK, so a parameter OpenAI adds is noticed).
KNOWN = frozenset(
    {
        *PASSTHROUGH,
        *("model", "input", "instructions", "conversation", "previous_response_id"),
        *("store", "stream", "stream_options", "background", "background_options"),
        *("metadata", "include", "prompt", "prompt_cache_retention", "prompt_cache_options"),
        *("service_tier", "context_management", "moderation", "image", "access_programs"),
        "verbosity",  # responses.parse sends it at the top: taken as text.verbosity
    }
)


@dataclass
class ResponseParams:
    model: str
    input: list[dict[str, Any]]  # item references still unresolved (api/item_references.py)
    response_id: str
    instructions: str | None = None
    conversation_id: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    stream: bool = False
    background: bool = False
    metadata: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    copied_from: dict[str, str] = field(default_factory=dict)  # set once references resolve


_wrong_type = validation.wrong_type


def _string(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    if required and body.get(key) is None:
        raise invalid(f"Missing required parameter: '{key}'.", key, "missing_required_parameter")
    return validation.optional_string(body, key)


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _wrong_type(key, "a boolean", value)
    return value


def _number(body: dict[str, Any], key: str, low: float, high: float | None) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _wrong_type(key, "a number", value)
    if value < low:
        raise invalid(
            f"Invalid '{key}': decimal below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            key,
            "decimal_below_min_value",
        )
    if high is not None and value > high:
        raise invalid(
            f"Invalid '{key}': decimal above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            key,
            "decimal_above_max_value",
        )


def _integer(body: dict[str, Any], key: str, low: int, high: int | None = None) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(key, "an integer", value)
    if value < low:
        raise invalid(
            f"Invalid '{key}': integer below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            key,
            "integer_below_min_value",
        )
    if high is not None and value > high:
        raise invalid(
            f"Invalid '{key}': integer above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            key,
            "integer_above_max_value",
        )


def _input(value: Any, created_at: int, thread: str) -> list[dict[str, Any]]:
    if value is None:
        raise invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    if isinstance(value, str):
        value = [{"type": "message", "role": "user", "content": value}]
    elif not isinstance(value, list):
        raise _wrong_type("input", "a string or an array", value)
    items = [normalize_item(raw, f"input[{i}]", created_at, thread) for i, raw in enumerate(value)]
    validation.no_duplicate(value, "input")
    return items


def _conversation(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
        if not isinstance(value, str):
            raise invalid(
                "Missing required parameter: 'conversation.id'.",
                "conversation.id",
                "missing_required_parameter",
            )
    if not isinstance(value, str):
        raise _wrong_type("conversation", "a string or an object", value)
    return validation.conversation_id(value)


def _tools(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        raise _wrong_type("tools", "an array", value)
    for i, tool in enumerate(value):
        param = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise _wrong_type(param, "an object", tool)
        if not isinstance(tool.get("type"), str):
            raise invalid(
                f"Missing required parameter: '{param}.type'.",
                f"{param}.type",
                "missing_required_parameter",
            )
        if tool["type"] != "function":
            # Models are reached through Chat Completions, which has no built-in tools: a
            # silently dropped web_search would have the model answer without searching.
            raise invalid(
                f"Tool type '{tool['type']}' is not supported by this server: only "
                "'function' tools are (its models are reached through Chat Completions, "
                "which has no built-in tools).",
                f"{param}.type",
                "invalid_value",
            )
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise invalid(
                f"Missing required parameter: '{param}.name'.",
                f"{param}.name",
                "missing_required_parameter",
            )
        if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
            raise _wrong_type(f"{param}.parameters", "an object", tool["parameters"])


def _tool_choice(value: Any) -> None:
    if value is None or value in ("none", "auto", "required"):
        return
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        if value["type"] != "function":  # as with `tools`: not silently dropped
            raise invalid(
                f"Tool choice type '{value['type']}' is not supported by this server: only "
                "'function' is (its models are reached through Chat Completions).",
                "tool_choice.type",
                "invalid_value",
            )
        if not isinstance(value.get("name"), str) or not value["name"]:
            raise invalid(
                "Missing required parameter: 'tool_choice.name'.",
                "tool_choice.name",
                "missing_required_parameter",
            )
        return
    raise invalid(
        f"Invalid value: '{value}'. Supported values are: 'none', 'auto', and 'required', "
        "or an object naming a tool.",
        "tool_choice",
    )


def _tools_for_choice(body: dict[str, Any]) -> None:
    """A forced tool must be one the request offers (OpenAI checks this at create; the
    upstream would otherwise refuse it only once a worker calls it)."""
    choice, tools = body.get("tool_choice"), body.get("tools") or []
    if choice == "required" and not tools:
        raise invalid(
            "Tool choice 'required' must be specified with 'tools' parameter.", "tool_choice"
        )
    if isinstance(choice, dict) and choice.get("name") not in {t.get("name") for t in tools}:
        raise invalid(
            f"Tool choice '{choice['name']}' not found in 'tools' parameter.", "tool_choice"
        )


def _text(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, dict):
        raise _wrong_type("text", "an object", value)
    fmt = value.get("format")
    if fmt is None:
        return
    if not isinstance(fmt, dict):
        raise _wrong_type("text.format", "an object", fmt)
    kinds = ("text", "json_schema", "json_object")
    if fmt.get("type") not in kinds:
        supported = ", ".join(f"'{k}'" for k in kinds)
        raise invalid(
            f"Invalid value: '{fmt.get('type')}'. Supported values are: {supported}.",
            "text.format.type",
        )


# The SDK's `Reasoning` fields (tests/test_response_validation.py checks them against it).
REASONING_FIELDS = frozenset({"effort", "summary", "generate_summary", "context", "mode"})
SUMMARIES = ("auto", "concise", "detailed")
REASONING_CONTEXTS = ("auto", "current_turn", "all_turns")  # which reasoning items recur


def _reasoning(value: Any) -> None:
    """`effort` is passed to reasoning models as sent: only its type is checked, since
    OpenAI keeps adding values (none ... xhigh, max) and a fixed list would refuse newer
    ones; a misspelt field or summary would otherwise be dropped without a word."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise _wrong_type("reasoning", "an object", value)
    validation.known(value, REASONING_FIELDS, "reasoning")
    for key in ("effort", "mode"):
        if value.get(key) is not None and not isinstance(value[key], str):
            raise _wrong_type(f"reasoning.{key}", "a string", value[key])
    for key in ("summary", "generate_summary"):
        _enum(value, key, SUMMARIES, f"reasoning.{key}")
    _enum(value, "context", REASONING_CONTEXTS, "reasoning.context")


def _include(value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, list):
        raise _wrong_type("include", "an array", value)
    for i, entry in enumerate(value):
        if not isinstance(entry, str):
            raise _wrong_type(f"include[{i}]", "a string", entry)
    validation.include(value)


def check_context(p: "ResponseParams") -> None:
    """With no conversation and no previous response, the input (its references resolved)
    is the whole context: a function call's output must come with the call (OpenAI's
    400; a Chat Completions upstream would refuse the orphan tool message only once a
    worker sent it). With them, the worker checks the whole context (workers/context.py)."""
    if p.conversation_id is not None or p.previous_response_id is not None:
        return
    call_id = orphan_output(p.input)
    if call_id is not None:
        raise invalid(orphan_message(call_id), "input", None)


def _enum(
    body: dict[str, Any], key: str, allowed: tuple[str, ...], param: str | None = None
) -> None:
    value = body.get(key)
    if value is not None and value not in allowed:
        raise invalid(
            f"Invalid value: '{value}'. Supported values are: {quote_list(allowed)}.",
            param or key,
        )


def parse(body: dict[str, Any], created_at: int, max_chars: int) -> ResponseParams:
    """Validate a create-response body; raise the OpenAI 400 for the first problem."""
    validation.known(body, KNOWN)
    validation.encodable(body, max_chars=max_chars)
    model = _string(body, "model", required=True)
    assert model is not None
    if not model:
        raise invalid(
            "Invalid 'model': empty string. Expected a string with minimum length 1, but got "
            "an empty string instead.",
            "model",
            "empty_string",
        )
    conversation_id = _conversation(body.get("conversation"))
    previous = _string(body, "previous_response_id")
    if conversation_id and previous:
        raise invalid(
            "Mutually exclusive parameters: Ensure you are only providing one of: "
            "'previous_response_id' or 'conversation'.",
            None,
            "mutually_exclusive_parameters",
        )
    store = _bool(body, "store", True)
    background = _bool(body, "background", False)
    if background and not store:
        raise invalid("Background mode requires 'store' to be true.", "background")
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _integer(body, "max_output_tokens", 16)
    _integer(body, "max_tool_calls", 1)
    _integer(body, "top_logprobs", 0, 20)
    _tools(body.get("tools"))
    _tool_choice(body.get("tool_choice"))
    _tools_for_choice(body)
    _bool(body, "parallel_tool_calls", True)
    _enum(body, "truncation", ("auto", "disabled"))
    _enum(body, "verbosity", ("low", "medium", "high"))
    _text(body.get("text"))
    _include(body.get("include"))
    _reasoning(body.get("reasoning"))
    for key in ("user", "prompt_cache_key", "safety_identifier"):
        _string(body, key)
    response_id = new_response_id(conversation_id)
    items = _input(body.get("input"), created_at, conversation_id or response_id)
    return ResponseParams(
        model=model,
        input=items,
        response_id=response_id,
        instructions=_string(body, "instructions"),
        conversation_id=conversation_id,
        previous_response_id=previous,
        store=store,
        stream=_bool(body, "stream", False),
        background=background,
        metadata=validation.metadata(body.get("metadata")),
        params=_passthrough(body),
    )


def _passthrough(body: dict[str, Any]) -> dict[str, Any]:
    params = {k: body[k] for k in PASSTHROUGH if body.get(k) is not None}
    verbosity = body.get("verbosity")
    if verbosity is not None:
        text = params.get("text") or {}
        params["text"] = {**text, "verbosity": text.get("verbosity", verbosity)}
    return params
