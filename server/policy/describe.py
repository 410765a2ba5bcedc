"""What an agent may do with one table and each of its columns, and why: for `describe`.

An agent that knows before it asks ("email is masked for you", "UPDATE needs approval") writes
better statements and fewer refused ones. This asks the engine the same questions a statement
would (one per action on the table, one `read_unmasked` per PII column), so the answer can never
disagree with what `query` will decide.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from server.identity.agent import Agent
from server.policy.decision import Verdict
from server.policy.engine import AuthorizationRequest, NoPolicyEngine, PolicyContext, PolicyEngine

DESCRIBED_ACTIONS: tuple[str, ...] = ("select", "insert", "update", "delete")


@dataclass(frozen=True)
class Permission:
    verdict: Verdict
    reasons: tuple[str, ...]
    policy_ids: tuple[str, ...]


@dataclass(frozen=True)
class ColumnAccess:
    column: str
    pii: str
    #: "read" (values as stored), "masked" (with `operator`), or "denied" (the table is not readable)
    access: str
    operator: str | None
    policy_ids: tuple[str, ...]


@dataclass(frozen=True)
class TablePermissions:
    table: str
    actions: Mapping[str, Permission]
    columns: tuple[ColumnAccess, ...]


def table_permissions(
    engine: PolicyEngine | NoPolicyEngine,
    agent: Agent,
    database: str,
    table: str,
    columns: Mapping[str, str],
    context: PolicyContext,
) -> TablePermissions:
    """`columns` maps each column name of `table` ("schema.table") to its PII entity ("" for none).
    `context` is the describe call's; its statement_kind and pii_entities are set per question."""
    actions: dict[str, Permission] = {}
    for action in DESCRIBED_ACTIONS:
        question = replace(context, statement_kind=action, pii_entities=())
        decision = engine.authorize(AuthorizationRequest(agent, database, ((action, table),), (), question))
        actions[action] = Permission(decision.verdict, decision.reasons, decision.policy_ids)
    pii = {f"{table}.{name}": entity for name, entity in columns.items() if entity}
    question = replace(context, statement_kind="select", pii_entities=tuple(sorted(set(pii.values()))))
    explanation = engine.explain(
        AuthorizationRequest(agent, database, (("select", table),), tuple(pii.items()), question)
    )
    by_column = {o.target: o for o in explanation.outcomes if o.action == "read_unmasked"}
    readable = actions["select"].verdict is Verdict.ALLOW
    access: list[ColumnAccess] = []
    for name, entity in columns.items():
        key = f"{table}.{name}"
        outcome = by_column.get(key)
        ids = outcome.policy_ids if outcome else ()
        if not readable:
            access.append(ColumnAccess(name, entity, "denied", None, actions["select"].policy_ids))
        elif outcome is not None and not outcome.allowed:
            operator = explanation.decision.masks.get(key, "default")
            access.append(ColumnAccess(name, entity, "masked", operator, ids))
        else:
            access.append(ColumnAccess(name, entity, "read", None, ids))
    return TablePermissions(table, actions, tuple(access))
