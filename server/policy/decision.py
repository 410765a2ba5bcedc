"""A verdict and everything that rides on it.

Modelled on datasette's permission checks: deny beats allow, and every verdict carries its reasons
and the ids of the rules that produced it, so the agent, the audit trail and `explain` can all say
why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Verdict(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    APPROVAL_REQUIRED = "approval_required"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reasons: tuple[str, ...] = ()
    policy_ids: tuple[str, ...] = ()
    policy_version: str | None = None
    #: lowers the configured row limit when set
    max_rows: int | None = None
    #: qualified table name -> SQL predicate ANDed into every reference to that table
    row_filters: Mapping[str, str] = field(default_factory=dict)
    #: qualified column name -> masking operator name
    masks: Mapping[str, str] = field(default_factory=dict)

    @property
    def allowed(self) -> bool:
        return self.verdict is Verdict.ALLOW
