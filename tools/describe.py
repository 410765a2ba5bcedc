"""`describe`: the schema an agent may query, and what it may do with each table and column."""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, TextContent
from pydantic import Field

from server.db.base import Catalog, TableInfo
from server.errors import BastionError
from server.pipeline import DESCRIBE, ToolCall, run
from tools.boundary import call_was_audited, runtime_of, structured, tool_error, transport_info

DESCRIPTION = """Learn the schema of a governed database.

Without `table`: every schema with its tables and views (and the configured databases).
With `table` (`name` or `schema.name`): its columns with type, nullability, keys, comments, whether
the column holds personal data, and what you may do with it (read, masked, denied)."""

# Until policies decide per agent, every user table may be read and no column is classified.
_INTERIM_ACCESS = "read"


def _table_summary(info: TableInfo) -> dict[str, Any]:
    return {"name": info.name, "kind": info.kind, "comment": info.comment, "access": _INTERIM_ACCESS}


def _overview(database: str, catalog: Catalog, databases: list[str]) -> dict[str, Any]:
    schemas: dict[str, list[dict[str, Any]]] = {}
    for (schema, _name), info in sorted(catalog.tables.items()):
        schemas.setdefault(schema, []).append(_table_summary(info))
    return {
        "database": database,
        "databases": databases,
        "dialect": catalog.dialect,
        "search_path": list(catalog.search_path),
        "schemas": [{"name": name, "tables": tables} for name, tables in schemas.items()],
    }


def _table_detail(database: str, info: TableInfo) -> dict[str, Any]:
    return {
        "database": database,
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
            "access": _INTERIM_ACCESS,
            "columns": [
                {
                    "name": column.name,
                    "type": column.data_type,
                    "nullable": column.nullable,
                    "primary_key": column.primary_key,
                    "default": column.default,
                    "comment": column.comment,
                    "pii_entity": None,
                    "access": _INTERIM_ACCESS,
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
        if state.tables and state.tables[0].info is not None:
            payload = _table_detail(state.database, state.tables[0].info)
        else:
            catalog = await runtime.database(state.database).catalog()
            payload = _overview(state.database, catalog, list(runtime.databases))
    except BastionError as error:
        return tool_error(error)
    text, content = structured(payload)
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=content)
