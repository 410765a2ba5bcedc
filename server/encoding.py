"""Row values to JSON.

Results go to the agent as JSON, so every database type needs one faithful, cheap rendering: numbers
stay numbers (a Decimal that would lose precision as a float becomes a string), times are ISO 8601,
bytes are base64 with a marker, and anything unknown becomes its `str`. The per-type dispatch is a
dict lookup so a 10,000-row result pays one lookup per cell, not a chain of isinstance checks.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import ipaddress
import uuid
from collections.abc import Callable
from typing import Any

_PASSTHROUGH: frozenset[type] = frozenset({str, int, bool, type(None)})


def _decimal(value: decimal.Decimal) -> Any:
    """A JSON number when a double holds it exactly enough (15 significant digits), else a string,
    so 12345678901234567890.123 is not silently rounded."""
    text = str(value)
    if "E" in text or not value.is_finite():
        return float(value) if value.is_finite() and len(value.as_tuple().digits) <= 15 else text
    digits = len(text) - (text[0] == "-") - ("." in text)
    return float(text) if digits <= 15 else text


def _float(value: float) -> Any:
    return value if value == value and value not in (float("inf"), float("-inf")) else str(value)


def _bytes(value: bytes | bytearray | memoryview) -> dict[str, str]:
    return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}


def _sequence(value: list[Any] | tuple[Any, ...]) -> list[Any]:
    return [to_json_value(item) for item in value]


def _mapping(value: dict[Any, Any]) -> dict[str, Any]:
    return {str(key): to_json_value(item) for key, item in value.items()}


_ENCODERS: dict[type, Callable[[Any], Any]] = {
    float: _float,
    decimal.Decimal: _decimal,
    dt.datetime: lambda v: v.isoformat(),
    dt.date: lambda v: v.isoformat(),
    dt.time: lambda v: v.isoformat(),
    dt.timedelta: lambda v: v.total_seconds(),
    uuid.UUID: str,
    bytes: _bytes,
    bytearray: _bytes,
    memoryview: _bytes,
    list: _sequence,
    tuple: _sequence,
    dict: _mapping,
    ipaddress.IPv4Address: str,
    ipaddress.IPv6Address: str,
    ipaddress.IPv4Network: str,
    ipaddress.IPv6Network: str,
    ipaddress.IPv4Interface: str,
    ipaddress.IPv6Interface: str,
}


def to_json_value(value: Any) -> Any:
    kind = type(value)
    if kind in _PASSTHROUGH:
        return value
    encoder = _ENCODERS.get(kind)
    if encoder is not None:
        return encoder(value)
    if isinstance(value, list | tuple):
        return _sequence(value)
    return str(value)


def encode_rows(rows: list[tuple[Any, ...]]) -> list[list[Any]]:
    """Encode a result's rows; columns whose values are all plain JSON types skip the per-cell work."""
    if not rows:
        return []
    width = len(rows[0])
    plain = [all(type(row[i]) in _PASSTHROUGH for row in rows) for i in range(width)]
    if all(plain):
        return [list(row) for row in rows]
    encoders = [None if plain[i] else to_json_value for i in range(width)]
    return [[value if enc is None else enc(value) for value, enc in zip(row, encoders, strict=True)] for row in rows]
