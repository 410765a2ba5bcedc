"""`describe`: the schema an agent may query, and what it may do with each table and column."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent
from pydantic import Field

from server.db.base import Catalog, TableInfo
from server.errors import BastionError
from server.pipeline import DESCRIBE, CallState, ToolCall, run
from server.policy.decision import Verdict
from server.policy.describe import table_permissions
from server.policy.engine import AuthorizationRequest, PolicyContext
from server.runtime import Runtime
from tools.boundary import call_was_audited, runtime_of, structured, tool_error, transport_info

DESCRIPTION = """Learn the schema of a governed database and what you may do with it.

Without `table`: every schema with its tables and views, and whether you may read each.
With `table` (`name` or `schema.name`): its columns with type, nullability, keys, comments, the
personal data each holds (pii_entity), and your access per column (read, masked with an operator, or
denied) and per action (select, insert, update, delete: allow, deny or approval_required, and why)."""

_ACCESS = {Verdict.ALLOW: "read", Verdict.APPROVAL_REQUIRED: "approval_required", Verdict.DENY: "denied"}


def _context(state: CallState) -> PolicyContext:
    return PolicyContext(
        purpose=state.call.purpose or "",
        tool="describe",
        transport=state.call.transport.transport,
        row_limit=0,
        statement_kind="select",
        pii_entities=(),
        hour_utc=datetime.now(UTC).hour,
    )


async def _overview(runtime: Runtime, state: CallState, catalog: Catalog) -> dict[str, Any]:
    assert state.database is not None and state.agent is not None
    engine = runtime.policy
    engine.bind(state.database, catalog, await runtime.pii_columns(state.database))
    context = _context(state)
    schemas: dict[str, list[dict[str, Any]]] = {}
    for (schema, _name), info in sorted(catalog.tables.items()):
        request = AuthorizationRequest(state.agent, state.database, (("select", info.qualified),), (), context)
        decision = engine.authorize(request)
        schemas.setdefault(schema, []).append(
            {"name": info.name, "kind": info.kind, "comment": info.comment, "access": _ACCESS[decision.verdict]}
        )
    return {
        "database": state.database,
        "databases": list(runtime.databases),
        "dialect": catalog.dialect,
        "search_path": list(catalog.search_path),
        "policy_version": engine.version,
        "schemas": [{"name": name, "tables": tables} for name, tables in schemas.items()],
    }


async def _table_detail(runtime: Runtime, state: CallState, info: TableInfo, catalog: Catalog) -> dict[str, Any]:
    assert state.database is not None and state.agent is not None
    pii = await runtime.pii_columns(state.database)
    runtime.policy.bind(state.database, catalog, pii)
    entities = {column.name: pii.get(f"{info.qualified}.{column.name}", "") for column in info.columns}
    permissions = table_permissions(
        runtime.policy, state.agent, state.database, info.qualified, entities, _context(state)
    )
    access = {item.column: item for item in permissions.columns}
    return {
        "database": state.database,
        "policy_version": runtime.policy.version,
        "table": {
            "schema": info.schema,
            "name": info.name,
            "kind": info.kind,
            "comment": info.comment,
            "primary_key": list(info.primary_key),
            "foreign_keys": [
                {
                    "columns": list(fk.columns),
                    "references": f"{fk.ref_schema}.{fk.ref_table}",
                    "ref_columns": list(fk.ref_columns),
                }
                for fk in info.foreign_keys
            ],
            "actions": {
                action: {
                    "verdict": permission.verdict.value,
                    "reasons": list(permission.reasons),
                    "policy_ids": list(permission.policy_ids),
                }
                for action, permission in permissions.actions.items()
            },
            "columns": [
                {
                    "name": column.name,
                    "type": column.data_type,
                    "nullable": column.nullable,
                    "primary_key": column.primary_key,
                    "default": column.default,
                    "comment": column.comment,
                    "pii_entity": entities[column.name] or None,
                    "access": access[column.name].access if column.name in access else "read",
                    "mask": access[column.name].operator if column.name in access else None,
                }
                for column in info.columns
            ],
        },
    }


async def describe(
    ctx: Context,
    database: Annotated[str | None, Field(description="Configured database name; default: the first.")] = None,
    table: Annotated[str | None, Field(description="A table or view: `name` or `schema.name`.")] = None,
) -> CallToolResult:
    runtime = runtime_of(ctx)
    call = ToolCall(
        tool="describe",
        arguments={"database": database, "table": table},
        transport=transport_info(ctx),
        database=database,
    )
    call_was_audited.set(True)
    try:
        state = await run(runtime, call, DESCRIBE)
        assert state.database is not None
        catalog = await runtime.database(state.database).catalog()
        if state.tables and state.tables[0].info is not None:
            payload = await _table_detail(runtime, state, state.tables[0].info, catalog)
        else:
            payload = await _overview(runtime, state, catalog)
    except BastionError as error:
        return tool_error(error)
    text, content = structured(payload)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=content)
