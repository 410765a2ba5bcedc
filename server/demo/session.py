"""`bastion demo`: a scripted agent session through the real MCP protocol.

It seeds the demo database, starts `bastion serve` as a subprocess over stdio (exactly what Claude
Desktop or an IDE does), and plays an agent: learn the schema, run an analytics join, try a
`DROP TABLE` and an `UPDATE`; the UPDATE needs approval, so the agent requests it, a person
(`alice`, a configured user in group `approvers`) approves it with `bastion approvals approve`, and
the agent runs it once with the approval id. Then it reads the audit trail those calls left. Each step is printed as a
person would want to read it, and the demo exits non-zero if Bastion did not behave as shown.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp_types import CallToolResult

from server import approvals_cli
from server.audit.export import format_tail
from server.config import load_config
from server.demo.config import DEMO_APPROVER, write_demo_config
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


async def _script(client: Client, config_path: Path) -> str:
    """The agent's session; returns the id of the approval it used."""
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

    _heading(4, "query: customer contacts (PII is masked before it leaves)")
    contacts = "SELECT full_name, email, phone AS note, country FROM customers ORDER BY id LIMIT 3"
    _show_sql(contacts)
    result = await _call(client, "query", {"sql": contacts, "purpose": "contact list for churn outreach"})
    if result.is_error:
        raise DemoFailed(f"the contacts query failed: {_text(result)}")
    data = result.structured_content or {}
    print(_table([c["name"] for c in data["columns"]], data["rows"]))
    masked = [f"{c['name']} ({c['pii_entity']}, {c['mask']})" for c in data["columns"] if c["masked"]]
    print(f"    -> masked: {', '.join(masked)}  (the alias `note` does not hide the phone)")
    if not masked:
        raise DemoFailed("the contacts were not masked")

    _heading(5, "query: a support ticket's free text (only the personal data inside is replaced)")
    ticket = "SELECT id, subject, body FROM support_tickets WHERE body LIKE '%card%' ORDER BY id LIMIT 1"
    _show_sql(ticket)
    result = await _call(client, "query", {"sql": ticket, "purpose": "triage a billing complaint"})
    if result.is_error:
        raise DemoFailed(f"the ticket query failed: {_text(result)}")
    row = (result.structured_content or {}).get("rows", [[None, None, ""]])[0]
    print(f"    subject: {row[1]}")
    print("    body:    " + "\n             ".join(textwrap.wrap(str(row[2]), 96)))

    _heading(6, "query: DROP TABLE customers (an agent gone wrong)")
    _show_sql("DROP TABLE customers")
    result = await _call(client, "query", {"sql": "DROP TABLE customers", "purpose": "clean up"})
    if not result.is_error:
        raise DemoFailed("DROP TABLE was not refused")
    print(f"    -> {_text(result)}")

    _heading(7, "query: UPDATE a customer's email (writes need a human's approval)")
    update = "UPDATE customers SET email = 'new@example.com' WHERE id = 1"
    _show_sql(update)
    result = await _call(client, "query", {"sql": update, "purpose": "fix a typo"})
    if not result.is_error:
        raise DemoFailed("UPDATE was not refused")
    print(f"    -> {_text(result)}")

    _heading(8, "request_approval: the agent asks a human for exactly this statement")
    justification = "customer 1 asked to change their email (ticket 4711)"
    result = await _call(client, "request_approval", {"sql": update, "justification": justification})
    if result.is_error:
        raise DemoFailed(f"request_approval failed: {_text(result)}")
    requested = result.structured_content or {}
    approval_id = str(requested["approval_id"])
    print(f"    -> approval {approval_id}: {requested['status']}, expires {requested['expires_at']}")
    print(f"       who can approve: {requested['who_can_approve']['summary']}")

    _heading(9, f"the approver, on the command line: bastion approvals approve ... --as {DEMO_APPROVER}")
    argv = ["approve", approval_id, "--as", DEMO_APPROVER, "--reason", "matches ticket 4711"]
    print(f"    $ bastion approvals {' '.join(argv[:4])} --reason '{argv[5]}'")
    print("    ", end="", flush=True)
    if await approvals_cli.run_command(load_config(config_path), argv) != 0:
        raise DemoFailed("the approval from the command line failed")

    _heading(10, "approval_status: the agent waits for the decision (returns as soon as it is made)")
    result = await _call(client, "approval_status", {"approval_id": approval_id, "wait_s": 10})
    status = result.structured_content or {}
    if status.get("status") != "approved":
        raise DemoFailed(f"the approval is not approved: {_text(result)}")
    print(f"    -> {status['status']} by {status['decided_by']} at {status['decided_at']}: {status['decision_reason']}")

    _heading(11, "query with approval_id: the approved UPDATE runs, once")
    _show_sql(update)
    result = await _call(client, "query", {"sql": update, "purpose": "fix a typo", "approval_id": approval_id})
    if result.is_error:
        raise DemoFailed(f"the approved UPDATE did not run: {_text(result)}")
    data = result.structured_content or {}
    print(f"    -> ran: decision {data['decision']['verdict']}, audit id {data['audit_id']}")
    check = "SELECT count(*) AS changed FROM customers WHERE id = 1 AND email = 'new@example.com'"
    result = await _call(client, "query", {"sql": check, "purpose": "check the approved fix"})
    changed = ((result.structured_content or {}).get("rows") or [[0]])[0][0]
    if changed != 1:
        raise DemoFailed(f"the approved UPDATE did not change the row: {_text(result)}")
    print(f"    -> {check}: {changed}")
    result = await _call(client, "query", {"sql": update, "purpose": "again?", "approval_id": approval_id})
    if not result.is_error:
        raise DemoFailed("the approval was used twice")
    print(f"    -> and again: {_text(result)}")

    _heading(12, "query: two statements smuggled into one call")
    stacked = "SELECT 1; DELETE FROM orders"
    _show_sql(stacked)
    result = await _call(client, "query", {"sql": stacked, "purpose": "harmless?"})
    if not result.is_error:
        raise DemoFailed("stacked statements were not refused")
    print(f"    -> {_text(result)}")
    return approval_id


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
            approval_id = await _script(client, config_path)
    except DemoFailed as failure:
        print(f"\nbastion demo: FAILED: {failure}", file=sys.stderr)
        return 1

    _heading(13, "the audit trail those calls left (bastion audit tail)")
    store = await open_state_store("sqlite:///state.db", base_dir=str(base.resolve()))
    try:
        events = await store.last_audit_events(20)
    finally:
        await store.close()
    print("\n".join("    " + line for line in format_tail(events).splitlines()))
    story = [
        f"{e.event.tool} ({e.event.decision}{', by ' + e.event.approver if e.event.approver else ''})"
        for e in events
        if e.event.approval_id == approval_id
    ]
    print(f"\n    the approval's story ({approval_id}): " + " -> ".join(story))
    print(f"\n    {len(events)} events, one per call. Export them: bastion audit export --config {config_path}")
    return 0
