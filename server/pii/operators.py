"""Masking operators, as a registry in Presidio's style: a name maps to a factory, so a deployment
can add an operator (`register_operator("tokenize", MyTokenizer)`) without touching the pipeline.

The four built in, and what each promises:

- `hash`: `email:5f2c9a1e3b`, the entity's label and the first 10 hex digits of HMAC-SHA256 over the
  value under the mask key. Deterministic across restarts (same key, same output), so joins,
  group-bys and distinct counts still work on masked columns; keyed, so nobody without the key can
  confirm a guess. 40 bits: collisions become likely only past about a million distinct values in
  one column, which would merge two groups in a group-by, never reveal a value.
- `partial`: the last 4 characters kept, the rest replaced by `*` (at most 12 of them, so a long
  value's length is not echoed). A value shorter than 8 characters is starred entirely: keeping 4 of
  6 characters would reveal most of it.
- `redact`: `[EMAIL_ADDRESS]` (the entity name in brackets; `[REDACTED]` without one). Says what was
  there and nothing else; breaks joins on purpose.
- `null`: the value becomes NULL. Inside free text, where a span cannot be NULL, it is replaced as
  `redact` would.

Every operator takes any value: it is first turned into canonical text (`canonical_text`) or bytes
(`canonical_bytes`), so an email in a `text` column and the same email inside a JSON value hash
alike. Operators never raise on a value; an error here is a bug, and the masking stage turns it into
a refusal (fail closed).
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from server.config import PiiConfig
from server.errors import ConfigError
from server.pii.keys import MaskKey
from server.pii.model import KNOWN_ENTITIES, NONE, label_for


def canonical_text(value: Any) -> str:
    """One text form per value, whatever the driver returned: str as is, bytes decoded (undecodable
    bytes as U+FFFD), JSON-like values as compact sorted JSON, dates in ISO form, the rest str()."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=canonical_text, separators=(",", ":"))
    return str(value)


def canonical_bytes(value: Any) -> bytes:
    """The bytes the HMAC is computed over: raw bytes as they are (so non-UTF-8 values hash
    faithfully), everything else as the UTF-8 of its canonical text (lone surrogates kept)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return canonical_text(value).encode("utf-8", errors="surrogatepass")


class Operator(ABC):
    """Turns a PII value (or a span of free text) into its masked form."""

    #: the name used in config (`pii.operators`) and in policies (`@mask("hash")`)
    name: ClassVar[str]

    @abstractmethod
    def mask(self, value: Any, entity: str | None) -> str | None:
        """The masked form of a whole (non-NULL) value of any type."""

    def mask_span(self, text: str, entity: str) -> str:
        """The replacement for a detected span inside free text; must be a string."""
        masked = self.mask(text, entity)
        return masked if masked is not None else f"[{entity}]"


class HashOperator(Operator):
    """Keyed HMAC-SHA256. The inner and outer pads are hashed once per key (RFC 2104), so each value
    costs two sha256 copies and updates: about 0.6 µs, against 1.5 µs for `hmac.digest`."""

    name = "hash"
    HEX_DIGITS = 10

    def __init__(self, key: MaskKey) -> None:
        secret = key.secret
        if len(secret) > 64:  # HMAC's rule for keys longer than the block size
            secret = hashlib.sha256(secret).digest()
        secret = secret.ljust(64, b"\x00")
        inner = hashlib.sha256(bytes(b ^ 0x36 for b in secret))
        outer = hashlib.sha256(bytes(b ^ 0x5C for b in secret))
        #: fresh copies of the keyed inner and outer states (the masking hot path inlines the HMAC)
        self.inner_copy = inner.copy
        self.outer_copy = outer.copy

    def digest_hex(self, data: bytes) -> str:
        inner = self.inner_copy()
        inner.update(data)
        outer = self.outer_copy()
        outer.update(inner.digest())
        return outer.hexdigest()[: self.HEX_DIGITS]

    def mask(self, value: Any, entity: str | None) -> str:
        return f"{label_for(entity)}:{self.digest_hex(canonical_bytes(value))}"


class PartialOperator(Operator):
    name = "partial"
    KEEP = 4
    MIN_LENGTH = 8
    MAX_STARS = 12

    def mask(self, value: Any, entity: str | None) -> str:
        text = canonical_text(value)
        if len(text) < self.MIN_LENGTH:
            return "*" * len(text)
        return "*" * min(len(text) - self.KEEP, self.MAX_STARS) + text[-self.KEEP :]


class RedactOperator(Operator):
    name = "redact"

    def mask(self, value: Any, entity: str | None) -> str:
        return f"[{entity}]" if entity else "[REDACTED]"


class NullOperator(Operator):
    name = "null"

    def mask(self, value: Any, entity: str | None) -> None:
        return None

    def mask_span(self, text: str, entity: str) -> str:
        return f"[{entity}]"


OperatorFactory = Callable[[MaskKey], Operator]

_REGISTRY: dict[str, OperatorFactory] = {
    "hash": HashOperator,
    "partial": lambda key: PartialOperator(),
    "redact": lambda key: RedactOperator(),
    "null": lambda key: NullOperator(),
}


class UnknownOperator(KeyError):
    """No operator of that name is registered."""


def register_operator(name: str, factory: OperatorFactory, *, replace: bool = False) -> None:
    """Add an operator; refuses to shadow an existing one unless `replace` is said out loud."""
    if not name or not name.isidentifier():
        raise ValueError(f"operator name {name!r} must be an identifier")
    if name in _REGISTRY and not replace:
        raise ValueError(f"an operator named {name!r} is already registered")
    _REGISTRY[name] = factory


def operator_names() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))


def get_operator(name: str, key: MaskKey) -> Operator:
    """A ready operator; raises UnknownOperator for a name nobody registered."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownOperator(name) from None
    return factory(key)


def check_operator_name(name: str, path: str) -> None:
    """ConfigError naming the config path when `name` is not a registered operator."""
    if name not in _REGISTRY:
        raise ConfigError(f"{path}: unknown masking operator {name!r} (known: {', '.join(operator_names())})")


def validate_pii_config(config: PiiConfig) -> None:
    """Every operator and entity name in the `pii` section must exist: a typo must stop the start,
    not silently leave a column unmasked or masked by some other rule."""
    check_operator_name(config.default_operator, "pii.default_operator")
    for entity, name in config.operators.items():
        _check_entity(entity, f"pii.operators.{entity}", allow_none=False)
        check_operator_name(name, f"pii.operators.{entity}")
    for column, entity in config.columns.items():
        parts = column.split(".")
        if len(parts) not in (3, 4) or not all(parts):
            raise ConfigError(
                f"pii.columns.{column}: name a column as schema.table.column or database.schema.table.column"
            )
        _check_entity(entity, f"pii.columns.{column}", allow_none=True)


def _check_entity(entity: str, path: str, *, allow_none: bool) -> None:
    if entity in KNOWN_ENTITIES or (allow_none and entity == NONE):
        return
    known = sorted(KNOWN_ENTITIES) + ([NONE] if allow_none else [])
    raise ConfigError(f"{path}: unknown PII entity {entity!r} (known: {', '.join(known)})")


class OperatorSet:
    """The operators one configuration uses, built once: the operator for each entity (its
    `pii.operators` entry, else `pii.default_operator`) and any operator by name (a policy's @mask)."""

    def __init__(self, config: PiiConfig, key: MaskKey) -> None:
        validate_pii_config(config)
        self.key = key
        self._default = config.default_operator
        self._per_entity: Mapping[str, str] = dict(config.operators)
        self._built: dict[str, Operator] = {}

    def named(self, name: str) -> Operator:
        """Raises UnknownOperator (the caller fails closed) for an unregistered name."""
        operator = self._built.get(name)
        if operator is None:
            operator = self._built[name] = get_operator(name, self.key)
        return operator

    def for_entity(self, entity: str | None) -> Operator:
        return self.named(self._per_entity.get(entity, self._default) if entity else self._default)

    def name_for_entity(self, entity: str | None) -> str:
        return self._per_entity.get(entity, self._default) if entity else self._default
