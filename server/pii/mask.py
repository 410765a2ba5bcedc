"""Masking a query result before any value leaves: the `mask` stage.

The caller (the pipeline) decides, per output column, a `ColumnPlan` from the column's lineage, the
catalog's classifications and the policy's decisions; this module only carries the plan out:

- `operator` set, `scan` false: every non-NULL value of the column is masked whole (`hash`,
  `partial`, `redact`) or becomes NULL (`null`), whatever its type: a masked column carries masked
  strings only, so no driver type can smuggle a raw value past the operator.
- `scan` true: string values (and strings inside arrays and JSON-like values, dictionary keys too)
  are scanned and only the detected spans replaced, each by `operator` when the plan names one (a
  policy's `@mask`), else by the operator configured for the span's entity. Bytes are scanned as
  UTF-8 (undecodable bytes do not stop the scan); integers of 8 digits or more are scanned as text
  (a card number stored in a bigint); other types (dates, floats, booleans, UUIDs) carry no pattern
  entity and pass unchanged.
- no plan, or neither: the column passes byte for byte.

Fail closed: anything that goes wrong (an operator raising, an unknown operator name, a row of the
wrong width) raises `MaskingFailed`, naming the column and the kind of error, never a value. There is
no path that returns the rows unmasked after an error.

Speed: work is done column by column (`zip(*rows)` transposes in C), NULLs are skipped, and each
distinct string is masked once per column (a memo), so a 10,000-row result costs about one HMAC per
distinct value. Figures in BENCHMARKS.md (`evals/bench/masking.py`).
"""

from __future__ import annotations

import datetime as dt
import decimal
import gc
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from server.config import PiiConfig
from server.db.base import ResultColumn
from server.pii.keys import MaskKey, load_mask_key
from server.pii.model import MaskingFailed, label_for
from server.pii.operators import (
    HashOperator,
    NullOperator,
    Operator,
    OperatorSet,
    PartialOperator,
    RedactOperator,
    UnknownOperator,
)

if TYPE_CHECKING:
    from server.pii.scan import Scanner

#: integers below this cannot be a card, phone or SSN written without separators worth scanning
_SCAN_INT_MIN = 10_000_000
#: types whose values cannot spell a pattern entity: passed through a scan untouched
_INERT = (bool, float, decimal.Decimal, dt.date, dt.time, dt.timedelta, uuid.UUID)


@dataclass(frozen=True)
class ColumnPlan:
    """What to do with one output column; see the module docstring."""

    operator: str | None = None
    entity: str | None = None
    scan: bool = False

    @property
    def active(self) -> bool:
        return self.operator is not None or self.scan


@dataclass(frozen=True)
class MaskedResult:
    rows: list[tuple[Any, ...]]
    #: per output column: cells whose value was changed (masked whole, or at least one span replaced)
    masked_cells: tuple[int, ...]
    #: per output column: entities the scan found in it (empty for columns not scanned)
    found_entities: tuple[frozenset[str], ...]


class Masker:
    """Operators and the scanner for one configuration; shared by every call, safe across tasks."""

    def __init__(self, operators: OperatorSet, scanner_factory: Callable[[], Scanner]) -> None:
        self.operators = operators
        self._scanner_factory = scanner_factory
        self._scanner: Scanner | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: PiiConfig, base_dir: str = ".", *, key: MaskKey | None = None) -> Masker:
        """Validate the `pii` section and load the key now (ConfigError at start-up, never a
        surprise on the first query); the detection engine is built on first need (or `warm()`)."""
        from server.pii.engine import engine_settings

        engine_settings(config, base_dir)  # phone regions and NER model directory checked now
        operators = OperatorSet(config, key or load_mask_key(config, base_dir))

        def build_scanner() -> Scanner:
            from server.pii.engine import get_engine
            from server.pii.scan import Scanner

            return Scanner(get_engine(config, base_dir))

        return cls(operators, build_scanner)

    @property
    def scanner(self) -> Scanner:
        """Built on first use (the engine takes about a second), once, even across threads."""
        scanner = self._scanner
        if scanner is None:
            with self._lock:
                scanner = self._scanner
                if scanner is None:
                    scanner = self._scanner = self._scanner_factory()
        return scanner

    def warm(self) -> None:
        """Build the detection engine now (about a second), e.g. in the server's lifespan."""
        _ = self.scanner

    def mask(
        self, columns: Sequence[ResultColumn], rows: Sequence[Sequence[Any]], plans: Sequence[ColumnPlan | None]
    ) -> MaskedResult:
        """The rows with every planned column masked; raises MaskingFailed rather than return a
        partly masked result."""
        width = len(columns)
        if len(plans) != width:
            raise MaskingFailed(f"masking plan has {len(plans)} entries for {width} result columns")
        if any(len(row) != width for row in rows):
            raise MaskingFailed(f"a result row does not have the {width} columns of the result")
        if not any(plan is not None and plan.active for plan in plans):
            return MaskedResult([tuple(row) for row in rows], (0,) * width, (frozenset(),) * width)
        # Masking allocates a few hundred thousand short-lived strings and tuples, none of them in
        # reference cycles; a garbage collection triggered halfway traverses the whole heap (spaCy's
        # and Presidio's objects included) and was measured adding 60-90 ms to a 10,000-row result.
        # Collection resumes as soon as the result is built.
        collecting = gc.isenabled()
        gc.disable()
        try:
            return self._mask(columns, rows, plans)
        finally:
            if collecting:
                gc.enable()

    def _mask(
        self, columns: Sequence[ResultColumn], rows: Sequence[Sequence[Any]], plans: Sequence[ColumnPlan | None]
    ) -> MaskedResult:
        width = len(columns)
        data: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [() for _ in range(width)]
        counts = [0] * width
        found: list[frozenset[str]] = [frozenset()] * width
        for index, plan in enumerate(plans):
            if plan is None or not plan.active:
                continue
            try:
                if plan.scan:
                    data[index], counts[index], found[index] = self._scan_column(data[index], plan)
                else:
                    data[index], counts[index] = self._mask_column(data[index], plan)
            except MaskingFailed:
                raise
            except UnknownOperator as error:
                raise MaskingFailed(
                    f"column {columns[index].name!r} cannot be masked: unknown masking operator {error.args[0]!r}"
                ) from None
            except Exception as error:  # fail closed: withhold the result, say which column and why
                raise MaskingFailed(
                    f"masking column {columns[index].name!r} failed ({type(error).__name__}); the result was withheld"
                ) from error
        return MaskedResult(list(zip(*data, strict=True)) if rows else [], tuple(counts), tuple(found))

    # --- whole values -----------------------------------------------------------------------------

    def _mask_column(self, values: Sequence[Any], plan: ColumnPlan) -> tuple[list[Any], int]:
        operator = self.operators.named(plan.operator) if plan.operator else self.operators.for_entity(plan.entity)
        if type(operator) is HashOperator:  # the built-in one: its HMAC is inlined below
            return _hash_column(operator, values, plan.entity)
        memo: dict[str, Any] = {}
        out: list[Any] = []
        count = 0
        mask = operator.mask
        untrusted = type(operator) not in (PartialOperator, RedactOperator, NullOperator)
        entity = plan.entity
        for value in values:
            if value is None:
                out.append(None)
                continue
            count += 1
            if type(value) is str:
                masked = memo.get(value, memo)
                if masked is memo:
                    masked = memo[value] = mask(value, entity)
            else:
                masked = mask(value, entity)
            if masked is not None and (masked.__class__ is not str or (untrusted and masked == value and value)):
                # a registered operator that hands back anything but text, or the text it was given,
                # is handing back the value itself
                raise MaskingFailed(f"masking operator {operator.name!r} returned the value unmasked")
            out.append(masked)
        return out, count

    # --- free text --------------------------------------------------------------------------------

    def _scan_column(self, values: Sequence[Any], plan: ColumnPlan) -> tuple[list[Any], int, frozenset[str]]:
        """Every string the column holds (inside arrays and JSON too) is gathered once, scanned in
        one batch, and put back with its spans replaced."""
        fixed: Operator | None = self.operators.named(plan.operator) if plan.operator else None
        span_memo: dict[tuple[str, str], str] = {}

        def replacement(text: str, entity: str) -> str:
            key = (text, entity)
            masked = span_memo.get(key)
            if masked is None:
                operator = fixed or self.operators.for_entity(entity)
                masked = span_memo[key] = operator.mask_span(text, entity)
            return masked

        entities: set[str] = set()
        if all(value.__class__ is str or value is None for value in values):  # the common case, fast
            distinct = list(dict.fromkeys(value for value in values if value is not None))
            changed = self.scanner.replace_many(distinct, replacement)
            masked_text = {distinct[index]: new for index, (new, _) in changed.items()}
            for _, detections in changed.values():
                entities.update(d.entity for d in detections)
            out = [masked_text.get(value, value) if value is not None else None for value in values]
            count = sum(1 for value in values if value is not None and value in masked_text)
            return out, count, frozenset(entities)
        texts: dict[str, None] = {}
        for value in values:
            if value is not None:
                _gather(value, texts)
        distinct = list(texts)
        changed = self.scanner.replace_many(distinct, replacement)
        replaced = {distinct[index]: new for index, (new, _) in changed.items()}
        for _, detections in changed.values():
            entities.update(d.entity for d in detections)
        out = []
        count = 0
        for value in values:
            if value is None:
                out.append(None)
                continue
            masked = _scan_value(value, lambda text: replaced.get(text, text))
            if masked is not value:
                count += 1
            out.append(masked)
        return out, count, frozenset(entities)


def _hash_column(operator: HashOperator, values: Sequence[Any], entity: str | None) -> tuple[list[Any], int]:
    """The hot path: strings hashed straight from their UTF-8 (the HMAC inlined: a function call
    per value is a fifth of the cost), each distinct value once when values repeat."""
    prefix = label_for(entity) + ":"
    inner_copy, outer_copy, size = operator.inner_copy, operator.outer_copy, operator.HEX_DIGITS
    strings = [value for value in values if value.__class__ is str]
    memo: dict[str, str] | None = {} if strings and len(set(strings)) < 0.8 * len(strings) else None
    out: list[Any] = []
    append = out.append
    count = 0
    for value in values:
        if value.__class__ is str:
            count += 1
            if memo is not None:
                masked = memo.get(value)
                if masked is not None:
                    append(masked)
                    continue
            inner = inner_copy()
            inner.update(value.encode("utf-8", "surrogatepass"))
            outer = outer_copy()
            outer.update(inner.digest())
            masked = prefix + outer.hexdigest()[:size]
            if memo is not None:
                memo[value] = masked
            append(masked)
        elif value is None:
            append(None)
        else:
            count += 1
            append(operator.mask(value, entity))
    return out, count


def _text_form(value: Any) -> str | None:
    """The text a scalar is scanned as, or None for a value that is not scanned (inert types,
    small integers) or is a container (walked instead)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (_INERT, list, tuple, dict)):
        return None
    if isinstance(value, int):
        return str(value) if abs(value) >= _SCAN_INT_MIN else None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="replace")
    return repr(value) if type(value).__name__ == "Record" else str(value)


def _gather(value: Any, texts: dict[str, None]) -> None:
    """Every text `_scan_value` will look up for this value."""
    if isinstance(value, (list, tuple)):
        for item in value:
            if item is not None:
                _gather(item, texts)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _gather(key, texts)
            if item is not None:
                _gather(item, texts)
        return
    text = _text_form(value)
    if text is not None:
        texts[text] = None


def _scan_value(value: Any, masked_text: Callable[[str], str]) -> Any:
    """The value with PII spans replaced in every string it holds; the very same object when
    nothing was found (the caller counts changed cells by identity). A value of a type not known
    here (a composite row, a range, an address object) is scanned through its text form and
    replaced by the masked text if anything is found: unknown never means unscanned."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        items = [_scan_value(item, masked_text) for item in value]
        if all(new is old for new, old in zip(items, value, strict=True)):
            return value
        return tuple(items) if isinstance(value, tuple) else items
    if isinstance(value, dict):
        pairs = [(_scan_value(k, masked_text), _scan_value(v, masked_text)) for k, v in value.items()]
        if all(nk is k and nv is v for (nk, nv), (k, v) in zip(pairs, value.items(), strict=True)):
            return value
        return dict(pairs)
    text = _text_form(value)
    if text is None:
        return value
    new = masked_text(text)
    return value if new == text else new
