"""`bastion demo`: a scripted agent session through the real MCP protocol.

It seeds the demo database, starts `bastion serve` as a subprocess over stdio (exactly what Claude
Desktop or an IDE does), and plays an agent: learn the schema, run an analytics join, try a
`DROP TABLE` and an `UPDATE`, then read the audit trail those calls left. Each step is printed as a
person would want to read it, and the demo exits non-zero if Bastion did not behave as shown.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import CallToolResult

from server.audit.export import format_tail
from server.demo.config import write_demo_config
from server.demo.seed import build_demo_database, demo_database_path
from server.store import open_state_store

REVENUE_BY_COUNTRY = """
SELECT c.country,
       count(DISTINCT c.id)           AS customers,
       count(o.id)                    AS orders,
       round(sum(o.total_cents) / 100.0, 2) AS revenue
FROM customers AS c
JOIN orders AS o ON o.customer_id = c.id
JOIN products AS p ON p.id = o.product_id
WHERE o.status <> 'cancelled'
GROUP BY c.country
ORDER BY revenue DESC
LIMIT 5
""".strip()


class DemoFailed(Exception):
    pass


def _heading(number: int, text: str) -> None:
    print(f"\n\033[1m[{number}] {text}\033[0m" if sys.stdout.isatty() else f"\n[{number}] {text}")


def _show_sql(sql: str) -> None:
    for line in sql.splitlines():
        print(f"    sql> {line}")


def _table(columns: list[str], rows: list[list[Any]]) -> str:
    cells = [[str(c) for c in columns]] + [["NULL" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join("    " + line for line in lines)


def _text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def _call(client: Client, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    return await client.call_tool(tool, arguments, meta={"bastion/conversation_id": "demo-conversation"})


async def _script(client: Client) -> None:
    tools = await client.list_tools()
    print("    tools offered: " + ", ".join(tool.name for tool in tools.tools))

    _heading(1, "describe: what can this agent see?")
    overview = (await _call(client, "describe", {})).structured_content or {}
    for schema in overview.get("schemas", []):
        names = ", ".join(f"{t['name']} ({t['kind']})" for t in schema["tables"])
        print(f"    schema {schema['name']}: {names}")

    _heading(2, "describe customers: columns, types and keys")
    detail = (await _call(client, "describe", {"table": "customers"})).structured_content or {}
    table = detail.get("table", {})
    print(
        _table(
            ["column", "type", "nullable", "key"],
            [[c["name"], c["type"], c["nullable"], "PK" if c["primary_key"] else ""] for c in table.get("columns", [])],
        )
    )

    _heading(3, "query: revenue by country (a 3-table join with aggregates)")
    _show_sql(REVENUE_BY_COUNTRY)
    result = await _call(client, "query", {"sql": REVENUE_BY_COUNTRY, "purpose": "weekly revenue report"})
    if result.is_error:
        raise DemoFailed(f"the analytics query failed: {_text(result)}")
    data = result.structured_content or {}
    print(_table([c["name"] for c in data["columns"]], data["rows"]))
    print(f"    -> {data['row_count']} rows, decision {data['decision']['verdict']}, audit id {data['audit_id']}")

    _heading(4, "query: DROP TABLE customers (an agent gone wrong)")
    _show_sql("DROP TABLE customers")
    result = await _call(client, "query", {"sql": "DROP TABLE customers", "purpose": "clean up"})
    if not result.is_error:
        raise DemoFailed("DROP TABLE was not refused")
    print(f"    -> {_text(result)}")

    _heading(5, "query: UPDATE a customer's email")
    update = "UPDATE customers SET email = 'new@example.com' WHERE id = 1"
    _show_sql(update)
    result = await _call(client, "query", {"sql": update, "purpose": "fix a typo"})
    if not result.is_error:
        raise DemoFailed("UPDATE was not refused")
    print(f"    -> {_text(result)}")

    _heading(6, "query: two statements smuggled into one call")
    stacked = "SELECT 1; DELETE FROM orders"
    _show_sql(stacked)
    result = await _call(client, "query", {"sql": stacked, "purpose": "harmless?"})
    if not result.is_error:
        raise DemoFailed("stacked statements were not refused")
    print(f"    -> {_text(result)}")


async def run_demo(base: Path, *, rebuild: bool = True) -> int:
    database = demo_database_path(base)
    if rebuild or not database.exists():
        build_demo_database(database)
        state = base / "state.db"
        for path in (state, Path(f"{state}-wal"), Path(f"{state}-shm")):
            path.unlink(missing_ok=True)
    config_path = write_demo_config(base)
    print("Bastion demo: a scripted agent connects over MCP (stdio) and works with a shop database.")
    print(f"    database: {database}   audit trail: {base / 'state.db'}   config: {config_path}")

    env = {key: value for key, value in os.environ.items() if not key.startswith("BASTION_")}
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "server", "serve", "--config", str(config_path)], env=env
    )
    try:
        async with Client(params, read_timeout_seconds=60) as client:
            await _script(client)
    except DemoFailed as failure:
        print(f"\nbastion demo: FAILED: {failure}", file=sys.stderr)
        return 1

    _heading(7, "the audit trail those calls left (bastion audit tail)")
    store = await open_state_store("sqlite:///state.db", base_dir=str(base.resolve()))
    try:
        events = await store.last_audit_events(20)
    finally:
        await store.close()
    print("\n".join("    " + line for line in format_tail(events).splitlines()))
    print(f"\n    {len(events)} events, one per call. Export them: bastion audit export --config {config_path}")
    return 0
