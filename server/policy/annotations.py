"""Obligations written as Cedar annotations, read and checked when the policies load.

Cedar decides allow or deny; what else the decision carries rides on annotations of the policies
that decided:

- `@id("...")`          the policy's id in decisions and the audit trail (else "file.cedar:line");
- `@reason("...")`      the text the agent and the audit trail see;
- `@row_filter("sql")`  on a permit of `select`: a predicate ANDed into every read of the table;
- `@max_rows("N")`      on a permit of `select`: lowers the row limit;
- `@mask("operator")`   on a forbid of `read_unmasked`: the masking operator for the column;
- `@approval("...")`    reserved for the approval issue (how an approval may be given).

An unknown annotation is an error, not ignored: `@row_fliter` silently ignored would leave a
permit without its filter, which fails open. Misplaced obligations (a row filter on a forbid, a
mask on a permit) are errors for the same reason: they would never apply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: masking operators a `@mask` may name (the PII issue's registry; "default" is Bastion's own)
MASK_OPERATORS: tuple[str, ...] = ("hash", "partial", "redact", "null")
#: most protective first: when several forbids decide one column, the first of these wins
MASK_STRENGTH: tuple[str, ...] = ("null", "redact", "hash", "partial")
KNOWN_ANNOTATIONS: frozenset[str] = frozenset({"id", "reason", "row_filter", "max_rows", "mask", "approval"})


@dataclass(frozen=True)
class Obligations:
    """What one policy's annotations oblige, once checked."""

    id: str | None = None
    reason: str | None = None
    row_filter: str | None = None
    max_rows: int | None = None
    mask: str | None = None
    approval: str | None = None


@dataclass(frozen=True)
class AnnotationProblem:
    annotation: str | None  # the annotation to point at; None: the policy itself
    message: str


def read_obligations(
    annotations: Mapping[str, str | None], effect: str, actions: frozenset[str] | None
) -> tuple[Obligations, list[AnnotationProblem]]:
    """Check one policy's annotations. `actions` is what its action scope can match (None: any)."""
    problems: list[AnnotationProblem] = []
    values = {name: (value or "") for name, value in annotations.items()}
    for name in values:
        if name not in KNOWN_ANNOTATIONS:
            known = ", ".join(f"@{k}" for k in sorted(KNOWN_ANNOTATIONS))
            problems.append(AnnotationProblem(name, f"unknown annotation @{name} (Bastion knows {known})"))

    def can(action: str) -> bool:
        return actions is None or action in actions

    policy_id = values.get("id")
    if "id" in values and not policy_id.strip():
        problems.append(AnnotationProblem("id", "@id must not be empty"))
    reason = values.get("reason")
    if "reason" in values and not reason.strip():
        problems.append(AnnotationProblem("reason", "@reason must not be empty"))

    row_filter = values.get("row_filter")
    if row_filter is not None:
        if effect != "permit" or not can("select"):
            problems.append(AnnotationProblem("row_filter", "@row_filter belongs on a permit of select"))
        elif not row_filter.strip():
            problems.append(AnnotationProblem("row_filter", "@row_filter must not be empty"))

    max_rows: int | None = None
    if "max_rows" in values:
        raw = values["max_rows"].strip()
        if effect != "permit" or not can("select"):
            problems.append(AnnotationProblem("max_rows", "@max_rows belongs on a permit of select"))
        elif not raw.isdigit() or int(raw) <= 0:
            problems.append(AnnotationProblem("max_rows", f"@max_rows must be a positive whole number, not {raw!r}"))
        else:
            max_rows = int(raw)

    mask = values.get("mask")
    if mask is not None:
        if effect != "forbid" or not can("read_unmasked"):
            problems.append(AnnotationProblem("mask", "@mask belongs on a forbid of read_unmasked"))
        elif mask not in MASK_OPERATORS:
            problems.append(
                AnnotationProblem("mask", f"@mask must be one of {', '.join(MASK_OPERATORS)}, not {mask!r}")
            )

    obligations = Obligations(
        id=policy_id.strip() if policy_id else None,
        reason=reason.strip() if reason else None,
        row_filter=row_filter.strip() if row_filter else None,
        max_rows=max_rows,
        mask=mask if mask in MASK_OPERATORS else None,
        approval=values.get("approval"),
    )
    return obligations, problems


def strongest_mask(operators: list[str]) -> str:
    """The most protective of the operators several forbids asked for; "default" when none did."""
    for operator in MASK_STRENGTH:
        if operator in operators:
            return operator
    return "default"
