"""`request_approval`: ask a human to agree to exactly one statement, once.

The request runs through the pipeline like a query up to policy (server/approvals/request.py) and is
audited. Approvers are told by webhook. When every policy that sent the statement to approval says
`@approval("client")` and the MCP client supports elicitation, the person in the client is asked
here and now, and their answer is recorded; otherwise (or if they dismiss the question) the request
waits for an approver out of band: `bastion approvals approve ID --as NAME`, or the HTTP API.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, ClientCapabilities, ElicitationCapability, FormElicitationCapability, TextContent
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from server.approvals.approvers import who_can_approve
from server.approvals.errors import ApprovalError
from server.approvals.model import Approval, ApprovalMode, ApprovalStatus
from server.approvals.request import REQUEST
from server.approvals.service import service_for
from server.errors import BastionError
from server.pipeline import ToolCall, run
from tools.approval_status import StatusOutput, describe_status
from tools.boundary import call_was_audited, runtime_of, structured, tool_error, transport_info

log = logging.getLogger(__name__)

#: how long the person in the client has to answer before the request waits for approvers instead
ELICITATION_TIMEOUT_S = 120.0

DESCRIPTION = """Ask a human to approve one write (or other statement) that policy sends to approval.

Pass the exact statement you will run and a justification the approver can judge. You get an
approval_id, its status and who may approve it. Then call approval_status (wait_s up to 60 to wait for
the decision) and, once approved, call query with the same statement and approval_id: it runs exactly
once, before the approval expires, and only while the policies are unchanged. You cannot approve
your own request."""


class Approvers(TypedDict):
    #: e.g. "a member of group dba (never the person the agent acts for)"
    summary: str
    groups: list[str]
    users: list[str]
    configured_users: list[str]


class RequestOutput(StatusOutput):
    who_can_approve: Approvers
    #: "human" (an approver out of band) or "client" (the person in the MCP client may confirm)
    mode: str


class Confirmation(BaseModel):
    """What the person in the client is asked."""

    approve: bool = Field(description="Approve running this exact statement once?")
    reason: str = Field(default="", description="Optional: why")


def _elicitation_supported(ctx: Context) -> bool:
    wanted = ClientCapabilities(elicitation=ElicitationCapability(form=FormElicitationCapability()))
    try:
        return bool(ctx.session.check_client_capability(wanted))
    except Exception:  # a transport without a back-channel, or an SDK change: fall back
        return False


async def _confirm_in_client(ctx: Context, approval: Approval) -> tuple[bool, str] | None:
    """(approved, reason) from the person in the client, or None when there is no answer."""
    message = (
        f"Agent {approval.agent_id} asks to run this {approval.statement_kind.upper()} on database "
        f"{approval.database}, once:\n\n{approval.statement}\n\nJustification: {approval.justification}"
    )
    try:
        with anyio.fail_after(ELICITATION_TIMEOUT_S):
            answer = await ctx.elicit(message, Confirmation)
    except Exception as error:  # timeout, no back-channel, a malformed answer: out of band instead
        log.info("in-client confirmation of %s got no answer (%s)", approval.id, type(error).__name__)
        return None
    if answer.action == "accept":
        data = answer.data
        return bool(data.approve), data.reason.strip()
    if answer.action == "decline":
        return False, "declined in the client"
    return None


async def request_approval(
    sql: Annotated[str, Field(description="The exact statement to approve, in the database's dialect.")],
    justification: Annotated[str, Field(description="Why it must run; shown to the approver and recorded.")],
    ctx: Context,
    database: Annotated[str | None, Field(description="Configured database name; default: the first.")] = None,
) -> Annotated[CallToolResult, RequestOutput]:
    runtime = runtime_of(ctx)
    call = ToolCall(
        tool="request_approval",
        arguments={"sql": sql, "justification": justification, "database": database},
        transport=transport_info(ctx),
        database=database,
        sql=sql,
        purpose=justification or None,
    )
    call_was_audited.set(True)
    try:
        state = await run(runtime, call, REQUEST)
    except BastionError as error:
        return tool_error(error)
    approval = state.approval
    assert approval is not None and state.agent is not None
    service = service_for(runtime)
    service.requested(approval)
    if approval.mode is ApprovalMode.CLIENT and _elicitation_supported(ctx):
        answer = await _confirm_in_client(ctx, approval)
        if answer is not None:
            person = state.agent.on_behalf_of or f"the user of {state.agent.client.name or 'the MCP client'}"
            try:
                approval = await service.confirm_in_client(approval.id, person, approve=answer[0], reason=answer[1])
            except ApprovalError as error:
                return tool_error(error)
    payload: dict[str, Any] = describe_status(approval)
    payload["who_can_approve"] = who_can_approve(runtime.policy, approval, runtime.config.identity.users)
    payload["mode"] = approval.mode.value
    if approval.status is ApprovalStatus.APPROVED:
        payload["next_step"] = f"Call query with the same sql and approval_id {approval.id}."
    elif approval.status is ApprovalStatus.DENIED:
        payload["next_step"] = "The request was denied; do not retry it unchanged."
    else:
        payload["next_step"] = (
            f"Call approval_status with approval_id {approval.id} and wait_s up to 60, then query with the "
            "same sql and the approval_id once it is approved."
        )
    text, content = structured(payload)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=content)
