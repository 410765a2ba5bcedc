"""From lineage and the decision to a masking plan per output column.

A value is masked when any PII column it is computed from (and whose value can show: not only
through count) was not granted `read_unmasked`; the operator is the strictest the deciding policies
name for those sources, or the one configured for the entity. Free-text sources and anything the
lineage could not trace are scanned and only the detected spans replaced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from server.pii.mask import ColumnPlan
from server.pii.model import FREE_TEXT
from server.pii.operators import OperatorSet
from server.policy.decision import Decision
from server.sql.lineage import OutputColumn

#: strictest first: when several sources of one value are masked differently, the first wins
STRICTNESS = ("null", "redact", "hash", "partial")


@dataclass(frozen=True)
class MaskedColumn:
    """What the result's column metadata says about one output column."""

    pii_entity: str | None
    operator: str | None  # the operator applied to the whole value, "scan" for spans, None
    sources: tuple[str, ...]  # the PII sources that were masked


def unmasked_requests(columns: Sequence[OutputColumn], pii: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """One read_unmasked question per PII column whose value can reach the output."""
    found: dict[str, str] = {}
    for column in columns:
        for source in sorted(column.revealed):
            entity = pii.get(source)
            if entity:
                found[source] = entity
    return tuple(found.items())


def _strictest(names: Sequence[str]) -> str:
    for name in STRICTNESS:
        if name in names:
            return name
    return sorted(names)[0]


def plan_masks(
    columns: Sequence[OutputColumn], pii: Mapping[str, str], decision: Decision, operators: OperatorSet
) -> tuple[list[ColumnPlan | None], list[MaskedColumn]]:
    plans: list[ColumnPlan | None] = []
    described: list[MaskedColumn] = []
    for column in columns:
        masked = [s for s in sorted(column.revealed) if s in decision.masks and pii.get(s)]
        entities = [pii[s] for s in masked]
        value_entities = [e for e in entities if e != FREE_TEXT]
        names = [
            operators.name_for_entity(pii[s]) if decision.masks[s] == "default" else decision.masks[s]
            for s in masked
            if pii[s] != FREE_TEXT
        ]
        if value_entities:
            operator = _strictest(names)
            plans.append(ColumnPlan(operator=operator, entity=value_entities[0]))
            described.append(MaskedColumn(value_entities[0], operator, tuple(masked)))
        elif masked or column.untraced:
            plans.append(ColumnPlan(scan=True))
            described.append(MaskedColumn(FREE_TEXT if masked else None, "scan", tuple(masked)))
        else:
            pii_sources = [pii[s] for s in sorted(column.revealed) if pii.get(s)]
            plans.append(None)
            described.append(MaskedColumn(pii_sources[0] if pii_sources else None, None, ()))
    return plans, described
