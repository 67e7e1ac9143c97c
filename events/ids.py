"""Identifier generation.

Ids are random (not time-ordered) so they leak nothing of when; order comes from the log.
Response and item ids name their thread (a conversation, or a response of its own), so
any replica finds one from its id alone in one lookup, with no index to keep.
"""

import secrets

# OpenAI's prefixes for the item types it documents; unknown types fall back to "item".
ITEM_ID_PREFIXES: dict[str, str] = {
    "message": "msg",
    "function_call": "fc",
    "function_call_output": "fco",
    "reasoning": "rs",
    "file_search_call": "fs",
    "web_search_call": "ws",
    "image_generation_call": "ig",
    "computer_call": "cu",
    "computer_call_output": "cuo",
    "code_interpreter_call": "ci",
    "local_shell_call": "lsh",
    "local_shell_call_output": "lsho",
    "shell_call": "sh",
    "shell_call_output": "sho",
    "apply_patch_call": "apc",
    "apply_patch_call_output": "apco",
    "mcp_list_tools": "mcpl",
    "mcp_approval_request": "mcpr",
    "mcp_approval_response": "mcpa",
    "mcp_call": "mcp",
    "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco",
    "tool_search_call": "tsc",
    "tool_search_output": "tso",
    "compaction": "cmp",
    "additional_tools": "at",
    "configuration_update": "cfg",
    "program": "prg",
    "program_output": "prgo",
}


def new_id(prefix: str) -> str:
    """A `prefix_` id with 192 random bits, hex: safe in NATS subjects and KV keys."""
    return f"{prefix}_{secrets.token_hex(24)}"


_HEX = 48  # hex digits of a new_id
# An item id's thread tag: the thread's own prefix cannot stand in it, as the id's
# prefix is the item type's.
_ITEM_THREADS = {"c": "conv_", "r": "resp_"}


def new_item_id(item_type: str, thread: str) -> str:
    """`<type prefix>_<tag><thread hex><16 random hex>`: `c` for a conversation's item,
    `r` for one of a response without a conversation (`thread` is then its id)."""
    prefix = ITEM_ID_PREFIXES.get(item_type, "item")
    kind, _, hex_part = thread.partition("_")
    return f"{prefix}_{kind[0]}{hex_part}{secrets.token_hex(8)}"


def item_thread(item_id: str) -> str | None:
    """The thread an item id names (see new_item_id); None for an id that names none,
    such as an item's made before ids carried their thread."""
    rest = item_id.partition("_")[2]
    if len(rest) != 1 + _HEX + 16 or rest[0] not in _ITEM_THREADS:
        return None
    hex_part = rest[1 : 1 + _HEX]
    if not all(c in "0123456789abcdef" for c in hex_part):
        return None
    return _ITEM_THREADS[rest[0]] + hex_part


def new_response_id(conversation_id: str | None) -> str:
    """`resp_` id that names its thread: a response of a conversation carries the
    conversation's hex, then its own, so any replica finds its events in one lookup;
    a response without a conversation is a thread of its own."""
    if conversation_id is None:
        return new_id("resp")
    return f"resp_{conversation_id.removeprefix('conv_')}{secrets.token_hex(8)}"


def response_thread(response_id: str) -> str:
    """The thread (log subject key) a response's events are on: see new_response_id."""
    hex_part = response_id.removeprefix("resp_")
    if len(hex_part) == _HEX + 16:
        return f"conv_{hex_part[:_HEX]}"
    return response_id
