"""`approval_status`: where an approval stands, optionally waiting (up to 60 s) for the decision.

Waiting parks the call until the decision is announced (PostgreSQL LISTEN/NOTIFY, or in process;
with a SQLite store a decision made by another process is found by a short poll; see
server/approvals/waiting.py), so it returns as soon as a human decides.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent
from pydantic import Field
from typing_extensions import TypedDict

from server.approvals.model import Approval, ApprovalStatus
from server.approvals.request import STATUS
from server.errors import BastionError
from server.pipeline import ToolCall, run
from tools.boundary import call_was_audited, runtime_of, structured, tool_error, transport_info

DESCRIPTION = """The status of an approval you requested: pending, approved, denied, expired or used, with
who decided, when and why. Pass wait_s (0-60) to wait for the decision: the call returns as soon as a
human decides, or when wait_s runs out (call it again to keep waiting)."""


class StatusOutput(TypedDict):
    approval_id: str
    #: pending | approved | denied | expired | used
    status: str
    database: str
    statement_kind: str
    sql: str
    created_at: str
    expires_at: str
    decided_by: str | None
    decided_at: str | None
    decision_reason: str | None
    used_at: str | None
    policy_version: str
    next_step: str


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def describe_status(approval: Approval) -> dict[str, Any]:
    """The structured status of `approval`, as of now."""
    status = approval.status_at(datetime.now(UTC))
    return {
        "approval_id": approval.id,
        "status": status.value,
        "database": approval.database,
        "statement_kind": approval.statement_kind,
        "sql": approval.statement,
        "created_at": _iso(approval.created_at),
        "expires_at": _iso(approval.expires_at),
        "decided_by": approval.decided_by,
        "decided_at": _iso(approval.decided_at),
        "decision_reason": approval.decision_reason,
        "used_at": _iso(approval.used_at),
        "policy_version": approval.policy_version,
    }


_NEXT = {
    ApprovalStatus.PENDING: "Still waiting for a human: call approval_status again with wait_s up to 60.",
    ApprovalStatus.APPROVED: "Call query with the same sql and this approval_id; it runs once.",
    ApprovalStatus.DENIED: "Denied: do not retry it unchanged.",
    ApprovalStatus.EXPIRED: "Expired unused: call request_approval again if it must still run.",
    ApprovalStatus.USED: "Already used: an approval runs its statement once.",
}


async def approval_status(
    approval_id: Annotated[str, Field(description="The approval_id request_approval returned.")],
    ctx: Context,
    wait_s: Annotated[
        float | None, Field(description="Wait up to this many seconds (0-60) for a decision; default: do not wait.")
    ] = None,
) -> Annotated[CallToolResult, StatusOutput]:
    runtime = runtime_of(ctx)
    call = ToolCall(
        tool="approval_status",
        arguments={"approval_id": approval_id, "wait_s": wait_s},
        transport=transport_info(ctx),
    )
    call_was_audited.set(True)
    try:
        state = await run(runtime, call, STATUS)
    except BastionError as error:
        return tool_error(error)
    assert state.approval is not None
    payload = describe_status(state.approval)
    payload["next_step"] = _NEXT[ApprovalStatus(payload["status"])]
    text, content = structured(payload)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=content)
