"""The interim rule set, until Cedar policies decide: reads of the database's own tables only.

It sits behind the same `authorize` stage signature the Cedar engine will implement, so replacing
it touches no other stage.
"""

from __future__ import annotations

from server.policy.decision import Decision, Verdict
from server.policy.resources import ResolvedTable
from server.sql.statement import Statement, StatementKind

POLICY_VERSION = "interim-read-only"


def decide_read_only(statement: Statement, tables: tuple[ResolvedTable, ...]) -> Decision:
    if statement.kind is not StatementKind.SELECT:
        return Decision(
            verdict=Verdict.DENY,
            reasons=(f"{statement.kind.value} statements are not permitted: writes are not permitted.",),
            policy_ids=("bastion:read-only",),
            policy_version=POLICY_VERSION,
        )
    names = ", ".join(t.qualified for t in tables) or "no table"
    return Decision(
        verdict=Verdict.ALLOW,
        reasons=(f"reads are permitted ({names}).",),
        policy_ids=("bastion:read-only",),
        policy_version=POLICY_VERSION,
    )
