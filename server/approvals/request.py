"""The request_approval and approval_status paths, as pipeline stages.

A request goes through the same stages as a query up to `authorize` (identity, scopes, analysis,
policy), so what is recorded is what policy said about this exact statement for this agent, and the
call is audited by `pipeline.run` like any other. `register` then stores the request bound to the
normalized statement, the database, the agent and the policy version, with its expiry:

- a statement policy allows as it is needs no approval (the agent is told to run it);
- one policy denies even with approval is refused (no human could make it run);
- a write on a database configured read-only is refused (no approval could make it run);
- when no policy names anyone who may approve on that database (and the statement's policies do
  not accept an in-client confirmation), the request is refused rather than left to expire.

`@approval("client")` on every policy that sent the statement to approval makes the request's mode
"client": the tool then asks the person in the MCP client (tools/request_approval.py).
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from server.approvals.approvers import approve_policy_exists
from server.approvals.binding import fingerprint
from server.approvals.errors import ApprovalNotNeeded, ApprovalNotUsable, InvalidApprovalArgument, UnknownApproval
from server.approvals.model import Approval, ApprovalMode, ApprovalStatus
from server.approvals.service import service_for
from server.errors import PolicyDenied
from server.pipeline import CallState, Stage, analyze, authorize, identify, scopes
from server.policy.decision import Decision, Verdict
from server.policy.engine import NoPolicyEngine, PolicyEngine

if TYPE_CHECKING:
    from server.runtime import Runtime

MAX_JUSTIFICATION_CHARS = 2_000
MAX_WAIT_S = 60.0


def new_approval_id() -> str:
    """Unguessable (128 bits): an id is checked against its agent anyway, but need not be secret-proof."""
    return "apr_" + secrets.token_urlsafe(16)


def approval_mode(engine: PolicyEngine | NoPolicyEngine, decision: Decision) -> ApprovalMode:
    """CLIENT only when every policy that sent the statement to approval says `@approval("client")`;
    anything else (no annotation, another value, a default deny) needs a human out of band."""
    if not decision.policy_ids or not isinstance(engine, PolicyEngine):
        return ApprovalMode.HUMAN
    for pid in decision.policy_ids:
        policy = engine.policies.get(pid)
        if policy is None or (policy.obligations.approval or "").strip().lower() != "client":
            return ApprovalMode.HUMAN
    return ApprovalMode.CLIENT


async def register(runtime: Runtime, state: CallState) -> CallState:
    decision, statement, agent = state.decision, state.statement, state.agent
    assert decision is not None and statement is not None and agent is not None and state.database is not None
    if decision.verdict is Verdict.ALLOW:
        raise ApprovalNotNeeded(
            "this statement needs no approval: policy allows it as it is",
            hint="Run it with the query tool.",
        )
    if decision.verdict is not Verdict.APPROVAL_REQUIRED:
        raise PolicyDenied(
            " ".join(decision.reasons) or "policy refuses this statement, even with a human's approval.",
            hint="No approval can make it run; call explain to see why, or describe to see what you may do.",
            policy_ids=decision.policy_ids,
        )
    if runtime.database_config(state.database).read_only:
        raise PolicyDenied(
            f"database {state.database} is configured read-only, so no approval could make this write run",
            hint=f"The operator must set databases.{state.database}.read_only: false to allow writes.",
        )
    engine = runtime.policy
    mode = approval_mode(engine, decision)
    if mode is ApprovalMode.HUMAN and not approve_policy_exists(engine, state.database):
        raise PolicyDenied(
            f"this statement needs a human's approval, but no policy names who may approve on database "
            f"{state.database} (the Cedar action approve)",
            hint='The operator must add a policy such as permit(principal in Group::"dba", action == '
            f'Action::"approve", resource in Database::"{state.database}").',
        )
    justification = str(state.call.arguments.get("justification") or "").strip()
    if not justification:
        raise InvalidApprovalArgument(
            "a justification is required: say why this statement must run",
            hint="Call request_approval again with a justification the approver can judge.",
        )
    now = datetime.now(UTC)
    approval = Approval(
        id=new_approval_id(),
        created_at=now,
        expires_at=now + timedelta(seconds=runtime.config.approvals.ttl_s),
        database=state.database,
        agent_id=agent.id,
        on_behalf_of=agent.on_behalf_of,
        statement=statement.sql,
        fingerprint=fingerprint(statement.sql, statement.dialect),
        statement_kind=statement.kind.value,
        tables=tuple(t.qualified for t in state.tables),
        justification=justification[:MAX_JUSTIFICATION_CHARS],
        policy_version=decision.policy_version or engine.version,
        policy_ids=decision.policy_ids,
        reasons=decision.reasons,
        mode=mode,
        status=ApprovalStatus.PENDING,
    )
    service = service_for(runtime)
    await service.store.create_approval(approval)
    return replace(state, approval=approval)


async def status(runtime: Runtime, state: CallState) -> CallState:
    """approval_status: the agent's own approval, waited for up to `wait_s` seconds."""
    assert state.agent is not None
    approval_id = str(state.call.arguments.get("approval_id") or "").strip()
    wait_s = state.call.arguments.get("wait_s")
    if wait_s is not None and not (isinstance(wait_s, int | float) and 0 <= wait_s <= MAX_WAIT_S):
        raise InvalidApprovalArgument(
            f"wait_s must be a number of seconds from 0 to {MAX_WAIT_S:.0f}, not {wait_s!r}",
            hint=f"Call approval_status again with wait_s between 0 and {MAX_WAIT_S:.0f} (repeat it to wait longer).",
        )
    service = service_for(runtime)
    try:
        approval = await service.get(approval_id)
    except UnknownApproval:
        raise ApprovalNotUsable(
            f"approval {approval_id!r} does not exist",
            hint="Use the approval_id request_approval returned.",
        ) from None
    if approval.agent_id != state.agent.id:
        raise ApprovalNotUsable(f"approval {approval_id} was not requested by this agent")
    if wait_s:
        approval = await service.wait(approval.id, float(wait_s))
    return replace(state, approval=approval, database=approval.database)


REQUEST: tuple[Stage, ...] = (identify, scopes, analyze, authorize, register)
STATUS: tuple[Stage, ...] = (identify, scopes, status)
