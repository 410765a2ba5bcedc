"""`describe` and `explain` through a real MCP client session."""

from __future__ import annotations

from mcp import Client

from tests.tools.test_query import text


async def test_describe_without_arguments_lists_schemas_and_tables(client: Client) -> None:
    result = await client.call_tool("describe", {})
    assert not result.is_error, text(result)
    schemas = {s["name"]: {t["name"]: t for t in s["tables"]} for s in result.structured_content["schemas"]}
    assert {"customers", "orders", "products", "order_totals", "big"} <= set(schemas["public"])
    assert schemas["public"]["order_totals"]["kind"] == "view"
    assert "employees" in schemas["hr"]
    assert schemas["public"]["customers"]["comment"] == "People who bought something"


async def test_describe_a_table_gives_columns_types_keys_and_comments(client: Client) -> None:
    result = await client.call_tool("describe", {"table": "orders"})
    table = result.structured_content["table"]
    columns = {c["name"]: c for c in table["columns"]}
    assert table["primary_key"] == ["id"] and columns["id"]["primary_key"] is True
    assert columns["quantity"]["type"] == "integer" and columns["quantity"]["nullable"] is False
    assert {fk["references"] for fk in table["foreign_keys"]} == {"public.customers", "public.products"}
    email = next(
        c
        for c in (await client.call_tool("describe", {"table": "customers"})).structured_content["table"]["columns"]
        if c["name"] == "email"
    )
    assert email["comment"] == "Primary contact address"


async def test_describe_a_schema_qualified_table(client: Client) -> None:
    result = await client.call_tool("describe", {"table": "hr.employees"})
    assert result.structured_content["table"]["schema"] == "hr"


async def test_describe_an_unknown_table_says_what_to_do(client: Client) -> None:
    result = await client.call_tool("describe", {"table": "nope"})
    assert result.is_error and "describe" in text(result)


async def test_explain_an_allowed_read_shows_the_decision_and_the_plan(client: Client) -> None:
    result = await client.call_tool("explain", {"sql": "SELECT * FROM orders WHERE customer_id = 3"})
    assert not result.is_error, text(result)
    data = result.structured_content
    assert data["decision"]["verdict"] == "allow"
    assert data["tables"] == ["public.orders"]
    assert any("Scan" in line for line in data["plan"])
    assert data["row_limit"] == 100


async def test_explain_a_write_shows_the_refusal_without_running_it(client: Client) -> None:
    result = await client.call_tool("explain", {"sql": "DELETE FROM orders"})
    data = result.structured_content
    assert data["decision"]["verdict"] == "approval_required" and data["plan"] == []
    assert data["decision"]["policy_ids"] == ["default-write-needs-approval"]
    count = await client.call_tool("query", {"sql": "SELECT count(*) FROM orders", "purpose": "check"})
    assert count.structured_content["rows"] == [[200]]
