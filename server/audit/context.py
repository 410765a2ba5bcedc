"""Prompt context: what the client says about why a call is made, kept with its audit event.

MCP lets a client put anything in a request's `_meta`, under a namespaced prefix. Bastion reads the
keys in `KNOWN_KEYS` (documented in docs/audit.md) and keeps every other non-protocol key too, since an
auditor may need what a particular agent framework sends. Everything is capped, because the client
decides the size: each value to its own limit, the whole map to `MAX_META_BYTES` of JSON, keeping the
known keys first and saying what was dropped. Values that are not JSON (the SDK passes through what
the wire had, but a test or an in-process client can hand over anything) are kept as their text.

Row values must never be in an audit event. Bastion never puts any here; what a client sends is the
client's responsibility, which the docs say plainly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PREFIX = "bastion/"
CONVERSATION_ID = "bastion/conversation_id"
#: key -> the most characters kept of its value (longer text is cut with a marker)
KNOWN_KEYS: dict[str, int] = {
    CONVERSATION_ID: 200,
    "bastion/prompt": 2_000,
    "bastion/user_prompt_excerpt": 500,
    "bastion/task": 500,
    "bastion/turn_id": 200,
    "bastion/eval_call_id": 200,
    "traceparent": 64,
    "tracestate": 512,
}
#: keys the protocol itself owns: recorded elsewhere (client info) or meaningless afterwards
PROTOCOL_PREFIX = "io.modelcontextprotocol/"
PROTOCOL_KEYS = frozenset({"progressToken", "progress_token"})
OTHER_VALUE_CHARS = 1_000
NON_JSON_CHARS = 256
MAX_KEY_CHARS = 128
MAX_KEYS = 64
MAX_META_BYTES = 8_192
TRUNCATED_KEY = "bastion/truncated"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more characters]"


def _value(key: str, value: Any) -> Any:
    limit = KNOWN_KEYS.get(key, OTHER_VALUE_CHARS)
    if isinstance(value, str):
        return _cut(value, limit)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError):
        return _cut(str(value), NON_JSON_CHARS)
    # a structured value is kept as it is when small, else as its cut JSON text
    return value if len(text) <= limit else _cut(text, limit)


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8", "backslashreplace"))


def prompt_context(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """The client's `_meta` as stored with the event: protocol keys removed, each value capped, the
    whole at most MAX_META_BYTES, with `bastion/truncated` naming the keys dropped to get there."""
    if not meta:
        return {}
    try:
        items = list(dict(meta).items())
    except (TypeError, ValueError):
        return {TRUNCATED_KEY: {"reason": "the _meta was not a map"}}
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    for raw_key, value in items:
        key = _cut(str(raw_key), MAX_KEY_CHARS)
        if key.startswith(PROTOCOL_PREFIX) or key in PROTOCOL_KEYS or key == TRUNCATED_KEY:
            continue
        kept[key] = _value(key, value)
    # known keys first, then the others by name: what is dropped to fit is the least useful
    order = sorted(kept, key=lambda k: (k not in KNOWN_KEYS, k))
    result: dict[str, Any] = {}
    budget = MAX_META_BYTES - 1_000  # room for the marker
    for key in order:
        cost = _size(key) + _size(kept[key]) + 2
        if len(result) < MAX_KEYS and cost <= budget:
            result[key] = kept[key]
            budget -= cost
        else:
            dropped.append(key)
    if dropped:
        result[TRUNCATED_KEY] = {"dropped_keys": [k[:64] for k in dropped[:10]], "dropped": len(dropped)}
    return result


def conversation_id(meta: Mapping[str, Any]) -> str | None:
    """The conversation the call belongs to, when the client said (a string, or a number as text)."""
    value = meta.get(CONVERSATION_ID)
    if isinstance(value, str) and value.strip():
        return value.strip()[: KNOWN_KEYS[CONVERSATION_ID]]
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None
