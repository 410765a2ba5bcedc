"""Who may approve: the Cedar `approve` action, asked with a human `User` as the principal.

The policy engine answers for agents; approvers are people, so this module builds the small entity
set a decision needs (the `User`, its `Group`s and the `Database`) and evaluates the engine's own
policy set through the engine's batch evaluator (`server/policy/evaluate.py`), so an errored forbid
denies here as it does everywhere. The context is the request's, as far as it applies: `purpose` is
the agent's justification, `statement_kind` the statement's kind, `tool` is "approve", `transport`
is how the approver came ("cli", "http", "client"), and `hour_utc` the hour of the decision; so a
policy can say, for example, that only DBAs approve deletes, or nobody approves at night.

`who_can_approve` reads the scopes of the permits of `approve` to tell an agent whom to ask ("a
member of group dba"), and names the configured users that qualify now.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cedarpy

from server.approvals.model import Approval
from server.config import UserConfig
from server.policy.engine import NoPolicyEngine, PolicyEngine
from server.policy.evaluate import Item, context_json, run_batch
from server.policy.schema import CONTEXT_ATTRIBUTES, static_schema

Engine = PolicyEngine | NoPolicyEngine


@dataclass(frozen=True)
class Approver:
    """A person deciding a request, and how they proved who they are."""

    name: str
    groups: tuple[str, ...] = ()
    #: "config" (the command line: a user named in identity.users), "oauth" (a token over HTTP),
    #: "client" (the person in the MCP client, through elicitation)
    auth_method: str = "config"
    subject: str | None = None
    token_id: str | None = None
    #: the OAuth client the person's token was issued to (HTTP only)
    client_id: str | None = None


@dataclass(frozen=True)
class ApproveAnswer:
    allowed: bool
    policy_ids: tuple[str, ...]
    reasons: tuple[str, ...]


def _entities(approver: Approver, database: str) -> cedarpy.Entities:
    groups = list(dict.fromkeys(approver.groups))
    documents: list[dict[str, Any]] = [
        {
            "uid": {"type": "User", "id": approver.name},
            "attrs": {},
            "parents": [{"type": "Group", "id": g} for g in groups],
        },
        *({"uid": {"type": "Group", "id": g}, "attrs": {}, "parents": []} for g in groups),
        {"uid": {"type": "Database", "id": database}, "attrs": {}, "parents": []},
    ]
    return cedarpy.Entities.from_json_str(json.dumps(documents), static_schema())


def may_approve(engine: Engine, approver: Approver, approval: Approval, *, transport: str) -> ApproveAnswer:
    """Whether policy lets `approver` decide `approval` (the `approve` action on its database)."""
    if not isinstance(engine, PolicyEngine):
        return ApproveAnswer(False, ("bastion:no-policy",), ("no valid policy is loaded",))
    values = {
        "purpose": approval.justification,
        "approved": False,
        "tool": "approve",
        "transport": transport,
        "row_limit": 0,
        "statement_kind": approval.statement_kind,
        "pii_entities": [],
        "hour_utc": datetime.now(UTC).hour,
    }
    item = Item("approve", "Database", approval.database, "")
    order = {pid: index for index, pid in enumerate(engine.policies)}
    try:
        (outcome,) = run_batch(
            [item],
            {"type": "User", "id": approver.name},
            {"approve": context_json(values, CONTEXT_ATTRIBUTES)},
            engine.bundle.policy_set,
            _entities(approver, approval.database),
            engine.policies,
            order,
        )
    except ValueError:  # Cedar refused the request or the entities: fail closed
        return ApproveAnswer(False, ("bastion:evaluation-error",), ("the approve policies could not be evaluated",))
    reasons = tuple(
        reason
        for pid in outcome.policy_ids
        if (policy := engine.policies.get(pid)) is not None and (reason := policy.obligations.reason)
    )
    return ApproveAnswer(outcome.allowed and not outcome.errors, outcome.policy_ids, reasons)


def _matches_database(scope: Mapping[str, Any], database: str) -> bool:
    op = scope.get("op")
    if op in ("in", "=="):
        entity = scope.get("entity") or {}
        return entity.get("type") == "Database" and entity.get("id") == database
    if op == "is":
        inside = scope.get("in")
        return scope.get("entity_type") == "Database" and (
            inside is None or _matches_database({"op": "in", **inside}, database)
        )
    return True  # "All", or a form not understood here: assume it may match


def _principal_label(scope: Mapping[str, Any]) -> str | None:
    op = scope.get("op")
    entity = scope.get("entity") or (scope.get("in") or {}).get("entity") or {}
    if op == "All" or (op == "is" and not entity):
        return "any configured user or person with a token"
    if entity.get("type") == "Group":
        return f"a member of group {entity.get('id')}"
    if entity.get("type") == "User":
        return f"user {entity.get('id')}"
    return None


def who_can_approve(
    engine: Engine,
    approval: Approval,
    users: Mapping[str, UserConfig],
) -> dict[str, Any]:
    """For the agent: who policy lets approve this request (from the permits of `approve` that can
    apply to its database), and which of the configured users qualify now."""
    groups: list[str] = []
    people: list[str] = []
    labels: list[str] = []
    if isinstance(engine, PolicyEngine):
        for policy in engine.policies.values():
            if policy.effect != "permit" or (policy.actions is not None and "approve" not in policy.actions):
                continue
            if policy.actions is None and policy.principal_scope.get("op") == "All":
                continue  # `permit(principal, action, resource)` is not a statement about approvers
            if not _matches_database(policy.resource_scope, approval.database):
                continue
            label = _principal_label(policy.principal_scope)
            if label and label not in labels:
                labels.append(label)
            entity = policy.principal_scope.get("entity") or (policy.principal_scope.get("in") or {}).get("entity")
            if entity and entity.get("type") == "Group" and entity.get("id") not in groups:
                groups.append(str(entity.get("id")))
            if entity and entity.get("type") == "User" and entity.get("id") not in people:
                people.append(str(entity.get("id")))
    configured = [
        name
        for name, user in users.items()
        if not is_requester(name, approval)
        and may_approve(engine, Approver(name, tuple(user.groups)), approval, transport="cli").allowed
    ]
    if labels:
        summary = " or ".join(labels) + " (never the person the agent acts for)"
    else:
        summary = "nobody: no policy permits the approve action on this database"
    return {"summary": summary, "groups": groups, "users": people, "configured_users": configured}


def is_requester(name: str, approval: Approval) -> bool:
    """Whether `name` is the human the requesting agent acts for (compared without case)."""
    human = approval.on_behalf_of
    return bool(human) and name.strip().casefold() == str(human).strip().casefold()


def approve_policy_exists(engine: Engine, database: str) -> bool:
    """Whether any permit of `approve` can apply to `database` (else no human could ever approve)."""
    if not isinstance(engine, PolicyEngine):
        return False
    return any(
        policy.effect == "permit"
        and policy.actions is not None
        and "approve" in policy.actions
        and _matches_database(policy.resource_scope, database)
        for policy in engine.policies.values()
    )
