"""The two stages an approval adds to the query path (server/pipeline.py composes them).

`approve` sits between `authorize` and `enforce`. It does nothing unless the call names an
`approval_id` and policy answered `approval_required`; then the approval must cover this exact call
(`binding.check_use`: agent, database, statement, policy version, status, expiry) and policy is
asked again with `context.approved = true`. Only if that allows the statement does the call go on,
carrying the approved decision. A statement policy allows as it is runs without touching the
approval; one policy denies stays denied whatever a human said.

`consume` sits right before `execute`: it marks the approval used in one conditional UPDATE of
the state store (`StateStore.consume_approval`), so of two calls racing with one approval exactly
one gets past it and runs the statement; the other is refused. The approval is spent even if the
statement then fails in the database: a failed run is on record, and running again needs a new
approval (fail closed: a write whose outcome is unknown is never retried on an old approval).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from server.approvals.binding import check_use, fingerprint
from server.approvals.errors import ApprovalNotUsable
from server.audit.event import AuditEvent
from server.errors import PolicyDenied
from server.policy.decision import Verdict

if TYPE_CHECKING:
    from server.pipeline import CallState
    from server.runtime import Runtime


def requested_approval_id(state: CallState) -> str | None:
    value = state.call.arguments.get("approval_id")
    return str(value).strip() if value else None


async def approve(runtime: Runtime, state: CallState) -> CallState:
    """Check the named approval against this call and re-decide with `approved = true`."""
    approval_id = requested_approval_id(state)
    decision = state.decision
    if approval_id is None or decision is None or decision.verdict is not Verdict.APPROVAL_REQUIRED:
        return state
    assert state.statement is not None and state.agent is not None and state.database is not None
    assert state.authorization is not None
    if runtime.store is None:
        raise ApprovalNotUsable("approvals need the state store, and this server has none")
    approval = await runtime.store.get_approval(approval_id)
    if approval is None:
        raise ApprovalNotUsable(
            f"approval {approval_id} does not exist",
            hint="Call request_approval with this statement and a justification to get an approval_id.",
        )
    check_use(
        approval,
        agent_id=state.agent.id,
        database=state.database,
        statement_fingerprint=fingerprint(state.statement.sql, state.statement.dialect),
        policy_version=decision.policy_version,
        now=datetime.now(UTC),
    )
    request = state.authorization
    approved = runtime.policy.authorize(replace(request, context=replace(request.context, approved=True)))
    if approved.policy_version != approval.policy_version:
        raise ApprovalNotUsable(
            f"the policies changed while approval {approval.id} was checked; it no longer applies",
            hint="Call request_approval again with this statement.",
        )
    if approved.verdict is not Verdict.ALLOW:
        raise PolicyDenied(
            " ".join(approved.reasons) or "policy refuses this statement even with a human's approval.",
            hint="No approval can make this statement run; call explain to see why.",
            policy_ids=approved.policy_ids,
        )
    return replace(state, decision=approved, approval=approval)


async def consume(runtime: Runtime, state: CallState) -> CallState:
    """Spend the approval, atomically, right before the statement runs."""
    approval = state.approval
    if approval is None:
        return state
    assert runtime.store is not None and state.database is not None and state.agent is not None
    if runtime.database_config(state.database).read_only:
        raise ApprovalNotUsable(
            f"database {state.database} is configured read-only, so no approved write can run there "
            f"(approval {approval.id} was not used)",
            hint=f"The operator must set databases.{state.database}.read_only: false to allow writes.",
        )
    used = await runtime.store.consume_approval(
        approval.id,
        agent_id=approval.agent_id,
        database=approval.database,
        fingerprint=approval.fingerprint,
        policy_version=approval.policy_version,
        now=datetime.now(UTC),
    )
    if used is None:
        current = await runtime.store.get_approval(approval.id) or approval
        check_use(
            current,
            agent_id=state.agent.id,
            database=state.database,
            statement_fingerprint=approval.fingerprint,
            policy_version=None,
            now=datetime.now(UTC),
        )
        raise ApprovalNotUsable(f"approval {approval.id} could not be used", hint="Request approval again.")
    return replace(state, approval=used)


def audit_approval(event: AuditEvent, state: CallState) -> AuditEvent:
    """The call's audit event with the approval it requested, checked, used or named."""
    approval = state.approval
    if approval is not None:
        return replace(event, approval_id=approval.id, approver=approval.decided_by)
    named = requested_approval_id(state)
    return replace(event, approval_id=named[:200]) if named else event
