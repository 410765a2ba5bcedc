"""Build the audit event for a call from its pipeline state.

Only what the pipeline decided and counted goes in: arguments as sent (SQL capped, never secrets),
the statement's kind and tables, the decision and its reasons, counts. Row values never do.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from server.audit.context import conversation_id
from server.audit.event import AuditEvent
from server.errors import ApprovalRequired, BastionError, PolicyDenied, SQLRejected

if TYPE_CHECKING:
    from server.pipeline import CallState

#: SQL longer than this is stored cut, with a marker; the analyzer refuses it anyway
MAX_AUDITED_SQL = 100_000
MAX_AUDITED_STRING = 4_000


def _capped_arguments(arguments: Any) -> dict[str, Any]:
    if not isinstance(arguments, dict):
        return {"_unparsed": str(arguments)[:MAX_AUDITED_STRING]}
    capped: dict[str, Any] = {}
    for key, value in arguments.items():
        limit = MAX_AUDITED_SQL if key == "sql" else MAX_AUDITED_STRING
        if isinstance(value, str) and len(value) > limit:
            capped[str(key)] = value[:limit] + f"... [{len(value) - limit} more characters]"
        elif isinstance(value, str | int | float | bool) or value is None:
            capped[str(key)] = value
        else:
            capped[str(key)] = str(value)[:MAX_AUDITED_STRING]
    return capped


def _decision_label(state: CallState, error: BastionError | None) -> str:
    if isinstance(error, ApprovalRequired):
        return "approval_required"
    if isinstance(error, PolicyDenied | SQLRejected):
        return "deny"
    if error is not None:
        return "error"
    if state.decision is not None:
        return state.decision.verdict.value
    return "allow"


def event_for(state: CallState, error: BastionError | None, *, duration_ms: float) -> AuditEvent:
    call = state.call
    transport = call.transport
    agent = state.agent
    decision = state.decision
    statement = state.statement
    result = state.result
    reasons: tuple[str, ...] = decision.reasons if decision else ()
    policy_ids: tuple[str, ...] = decision.policy_ids if decision else ()
    if isinstance(error, PolicyDenied) and error.policy_ids:
        policy_ids = error.policy_ids
    if error is not None:
        reasons = (error.message,) if not reasons or isinstance(error, PolicyDenied) else reasons
    return AuditEvent(
        id=str(uuid.uuid4()),
        time=datetime.now(UTC),
        tool=call.tool,
        decision=_decision_label(state, error),
        session_id=transport.session_id,
        transport=transport.transport,
        client_name=transport.client.name,
        client_version=transport.client.version,
        agent_id=agent.id if agent else None,
        groups=agent.groups if agent else (),
        on_behalf_of=agent.on_behalf_of if agent else None,
        auth_method=agent.auth_method if agent else None,
        token_jti=agent.token_id if agent else None,
        token_sub=agent.subject if agent else None,
        arguments=_capped_arguments(dict(call.arguments)),
        purpose=call.purpose,
        conversation_id=conversation_id(transport.request_meta),
        request_meta=dict(transport.request_meta),
        database=state.database or call.database,
        statement_kind=statement.kind.value if statement else None,
        tables=tuple(t.qualified for t in state.tables)
        or (tuple(t.qualified for t in statement.tables) if statement else ()),
        columns=tuple(sorted({c.name for c in statement.columns})) if statement else (),
        pii_columns=tuple(
            sorted({s for c in (state.lineage.columns if state.lineage else ()) for s in c.revealed if s in state.pii})
        ),
        masked_columns=tuple(sorted({s for m in state.masking for s in m.sources})),
        masked_cells={
            column.name: count for column, count in zip(result.columns, state.masked_cells, strict=False) if count
        }
        if result is not None and state.masked_cells
        else {},
        policy_ids=policy_ids,
        policy_version=decision.policy_version if decision else None,
        reasons=reasons,
        row_count=(result.affected_rows if result.affected_rows is not None else result.row_count) if result else None,
        truncated=result.truncated if result else None,
        duration_ms=round(duration_ms, 3),
        error=f"{error.code}: {error.message}" if error is not None else None,
    )
