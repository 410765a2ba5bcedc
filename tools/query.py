"""`query`: run one read statement under governance."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent
from pydantic import Field
from typing_extensions import TypedDict

from server.encoding import encode_rows
from server.errors import BastionError
from server.pipeline import QUERY, CallState, ToolCall, run
from tools.boundary import call_was_audited, runtime_of, structured, tool_error, transport_info

DESCRIPTION = """Run one SQL statement (a read) against a governed database and get the rows back.

Bastion checks the statement before it runs: one statement only, reads of the database's own tables,
no side-effect functions. Results are capped at the database's max_rows (truncated=true says more rows
exist: add a WHERE clause, an aggregate or a LIMIT). Call `describe` first to learn the tables and columns.
Say why you run it in `purpose`; it is recorded in the audit trail."""


class OutputColumn(TypedDict):
    name: str
    type: str
    masked: bool
    pii_entity: str | None
    #: how the values were masked: an operator (hash, partial, redact, null), "scan" when only the
    #: personal data found inside free text was replaced, or None
    mask: str | None


class QueryDecision(TypedDict):
    verdict: str
    policy_ids: list[str]
    reasons: list[str]


class QueryOutput(TypedDict):
    database: str
    columns: list[OutputColumn]
    #: each row a list of values in column order; declared loosely on purpose, because a client
    #: validating a typed 2-D array descends into every cell (measured: ~60 ms for 1,000 x 9)
    rows: Annotated[Any, Field(description="The rows: each a list of values in column order.")]
    row_count: int
    #: for writes: rows the database reports changed (None for reads)
    affected_rows: int | None
    truncated: bool
    decision: QueryDecision
    audit_id: str


def _columns(state: CallState) -> list[dict[str, Any]]:
    result = state.result
    assert result is not None
    masking = state.masking if len(state.masking) == len(result.columns) else ()
    columns = []
    for index, column in enumerate(result.columns):
        described = masking[index] if masking else None
        cells = state.masked_cells[index] if index < len(state.masked_cells) else 0
        operator = described.operator if described else None
        columns.append(
            {
                "name": column.name,
                "type": column.type_name,
                "masked": bool(operator and (operator != "scan" or cells)),
                "pii_entity": described.pii_entity if described else None,
                "mask": operator if operator != "scan" or cells else None,
            }
        )
    return columns


async def query(
    sql: Annotated[str, Field(description="One SQL statement, in the database's dialect.")],
    ctx: Context,
    purpose: Annotated[str, Field(description="Why you are running this query (recorded).")] = "",
    database: Annotated[str | None, Field(description="Configured database name; default: the first.")] = None,
    max_rows: Annotated[int | None, Field(ge=1, description="Return at most this many rows.")] = None,
    approval_id: Annotated[str | None, Field(description="An approved request's id, for writes.")] = None,
) -> Annotated[CallToolResult, QueryOutput]:
    runtime = runtime_of(ctx)
    arguments = {"sql": sql, "purpose": purpose, "database": database, "max_rows": max_rows}
    if approval_id is not None:
        arguments["approval_id"] = approval_id
    call = ToolCall(
        tool="query",
        arguments=arguments,
        transport=transport_info(ctx),
        database=database,
        sql=sql,
        purpose=purpose or None,
        max_rows=max_rows,
    )
    call_was_audited.set(True)
    try:
        state = await run(runtime, call, QUERY)
    except BastionError as error:
        return tool_error(error)
    result = state.result
    decision = state.decision
    assert result is not None and decision is not None and state.database is not None
    payload: dict[str, Any] = {
        "database": state.database,
        "columns": _columns(state),
        "rows": encode_rows(result.rows),
        "row_count": result.row_count,
        "affected_rows": result.affected_rows,
        "truncated": result.truncated,
        "decision": {
            "verdict": decision.verdict.value,
            "policy_ids": list(decision.policy_ids),
            "reasons": list(decision.reasons),
        },
        "audit_id": state.audit_id or "",
    }
    text, content = structured(payload)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=content)
