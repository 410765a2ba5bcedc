"""`explain`: what Bastion would do with a statement, and the database's plan, without running it."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent
from pydantic import Field

from server.errors import BastionError
from server.pipeline import EXPLAIN, ToolCall, run
from tools.boundary import call_was_audited, runtime_of, structured, tool_error, transport_info

DESCRIPTION = """Explain a statement without running it: whether Bastion would allow, deny or send it
for approval (and why, with the policy ids), the tables it touches, the SQL that would run, the row limit,
and the database's query plan (for an allowed statement)."""


async def explain(
    sql: Annotated[str, Field(description="One SQL statement, in the database's dialect.")],
    ctx: Context,
    database: Annotated[str | None, Field(description="Configured database name; default: the first.")] = None,
) -> CallToolResult:
    runtime = runtime_of(ctx)
    call = ToolCall(
        tool="explain",
        arguments={"sql": sql, "database": database},
        transport=transport_info(ctx),
        database=database,
        sql=sql,
    )
    call_was_audited.set(True)
    try:
        state = await run(runtime, call, EXPLAIN)
    except BastionError as error:
        return tool_error(error)
    decision = state.decision
    statement = state.statement
    assert decision is not None and statement is not None
    payload: dict[str, Any] = {
        "database": state.database,
        "decision": {
            "verdict": decision.verdict.value,
            "reasons": list(decision.reasons),
            "policy_ids": list(decision.policy_ids),
            "policy_version": decision.policy_version,
        },
        "statement_kind": statement.kind.value,
        "tables": [table.qualified for table in state.tables],
        "functions": list(statement.functions),
        "sql": state.sql_to_run,
        "row_limit": state.limits.max_rows if state.limits else None,
        "row_filters": dict(decision.row_filters),
        "masks": dict(decision.masks),
        "plan": list(state.plan),
    }
    text, content = structured(payload)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=content)
