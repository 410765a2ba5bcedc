"""`query` through a real MCP client session against the real PostgreSQL."""

from __future__ import annotations

from typing import Any

from mcp import Client
from mcp_types import CallToolResult


def text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def query(client: Client, sql: str, **arguments: Any) -> CallToolResult:
    return await client.call_tool("query", {"sql": sql, "purpose": "test", **arguments})


async def test_the_three_tools_are_offered(client: Client) -> None:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert {"query", "describe", "explain"} <= set(tools)
    assert tools["query"].output_schema is not None
    assert "sql" in tools["query"].input_schema["required"]


async def test_a_read_returns_rows_columns_and_the_decision(client: Client) -> None:
    result = await query(client, "SELECT id, full_name, country FROM customers WHERE id <= 3 ORDER BY id")
    assert not result.is_error, text(result)
    data = result.structured_content
    assert [c["name"] for c in data["columns"]] == ["id", "full_name", "country"]
    assert data["columns"][0]["type"] in ("int4", "integer")
    assert [row[0] for row in data["rows"]] == [1, 2, 3] and [row[2] for row in data["rows"]] == ["FR", "US", "JP"]
    # full_name is classified PERSON from its name; the default policy masks it with the hash operator
    name = data["columns"][1]
    assert name["masked"] is True and name["pii_entity"] == "PERSON" and name["mask"] == "hash"
    assert all(row[1].startswith("name:") and "Customer" not in row[1] for row in data["rows"])
    assert data["columns"][2]["masked"] is False
    assert data["row_count"] == 3 and data["truncated"] is False
    assert data["decision"]["verdict"] == "allow" and data["audit_id"]


async def test_a_join_with_aggregates_comes_back_right(client: Client) -> None:
    sql = """
        SELECT c.country, count(*) AS orders, sum(o.quantity * p.price) AS revenue
        FROM orders o JOIN customers c ON c.id = o.customer_id JOIN products p ON p.id = o.product_id
        GROUP BY c.country ORDER BY c.country"""
    result = await query(client, sql)
    assert not result.is_error, text(result)
    rows = {row[0]: row for row in result.structured_content["rows"]}
    assert set(rows) == {"DE", "FR", "JP", "US"}
    assert sum(row[1] for row in rows.values()) == 200


async def test_schema_qualified_tables_and_views_can_be_read(client: Client) -> None:
    result = await query(client, "SELECT count(*) FROM hr.employees")
    assert result.structured_content["rows"] == [[2]]
    result = await query(client, "SELECT customer_id, orders FROM order_totals ORDER BY customer_id LIMIT 1")
    assert not result.is_error, text(result)


async def test_drop_table_is_refused_with_the_policy_reason(client: Client) -> None:
    result = await query(client, "DROP TABLE customers")
    assert result.is_error
    assert text(result).startswith("Refused: schema changes and administrative statements are not allowed")
    still_there = await query(client, "SELECT count(*) FROM customers")
    assert still_there.structured_content["rows"] == [[40]]


async def test_update_without_approval_is_refused_with_a_hint(client: Client) -> None:
    result = await query(client, "UPDATE customers SET email = 'x' WHERE id = 1")
    assert result.is_error and text(result).startswith("Needs approval:")
    assert "request_approval" in text(result)
    unchanged = await query(client, "SELECT count(*) FROM customers WHERE email = 'customer1@example.com'")
    assert unchanged.structured_content["rows"] == [[1]]


async def test_stacked_statements_are_refused(client: Client) -> None:
    result = await query(client, "SELECT 1; DROP TABLE orders")
    assert result.is_error and "one statement" in text(result).lower()


async def test_a_writable_cte_is_refused(client: Client) -> None:
    result = await query(client, "WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone")
    assert result.is_error


async def test_malformed_sql_gets_a_clear_error_and_the_server_keeps_serving(client: Client) -> None:
    result = await query(client, "SELEC id FROM customers")
    assert result.is_error and "Traceback" not in text(result)
    assert not (await query(client, "SELECT 1 AS one")).is_error


async def test_empty_sql_is_refused(client: Client) -> None:
    result = await query(client, "   ")
    assert result.is_error


async def test_megabytes_of_sql_are_refused_before_parsing(client: Client) -> None:
    huge = "SELECT " + " + ".join(["1"] * 400_000)
    result = await query(client, huge)
    assert result.is_error and "characters long" in text(result)


async def test_unknown_database_names_the_configured_ones(client: Client) -> None:
    result = await query(client, "SELECT 1", database="nope")
    assert result.is_error and "main" in text(result)


async def test_unknown_table_points_to_describe(client: Client) -> None:
    result = await query(client, "SELECT * FROM no_such_table")
    assert result.is_error and "describe" in text(result)


async def test_system_relations_are_refused(client: Client) -> None:
    for sql in (
        "SELECT query FROM pg_stat_activity",
        "SELECT * FROM pg_catalog.pg_roles",
        "SELECT table_name FROM information_schema.tables",
    ):
        result = await query(client, sql)
        assert result.is_error, sql
        assert "system relation" in text(result), sql


async def test_side_effect_functions_are_refused_wherever_they_hide(client: Client) -> None:
    for sql in (
        "SELECT pg_sleep(5)",
        "SELECT * FROM pg_read_file('/etc/passwd')",
        "SELECT id FROM customers WHERE id = (SELECT pg_terminate_backend(1))",
        "SELECT \"pg_catalog\".\"set_config\"('search_path', 'hr', false)",
    ):
        result = await query(client, sql)
        assert result.is_error, sql


async def test_a_slow_query_times_out_with_a_hint(client: Client) -> None:
    sql = "SELECT count(*) FROM big a CROSS JOIN big b CROSS JOIN big c"
    result = await query(client, sql)
    assert result.is_error and "timeout" in text(result).lower()


async def test_a_large_result_is_truncated_at_max_rows(client: Client) -> None:
    result = await query(client, "SELECT id, payload FROM big ORDER BY id")
    data = result.structured_content
    assert data["row_count"] == 100 and data["truncated"] is True


async def test_the_agent_can_ask_for_fewer_rows_but_not_more(client: Client) -> None:
    assert (await query(client, "SELECT id FROM big", max_rows=5)).structured_content["row_count"] == 5
    assert (await query(client, "SELECT id FROM big", max_rows=10_000)).structured_content["row_count"] == 100


async def test_database_errors_never_echo_row_values(client: Client) -> None:
    result = await query(client, "SELECT email::int FROM customers")
    assert result.is_error
    assert "@example.com" not in text(result)


async def test_wrong_argument_types_are_refused(client: Client) -> None:
    result = await client.call_tool("query", {"sql": "SELECT 1", "max_rows": "lots"})
    assert result.is_error


async def test_values_of_many_types_come_back_as_json(client: Client) -> None:
    sql = """SELECT 1.5::numeric AS n, 12345678901234567890.123::numeric AS big, now()::date AS d,
                    '10.0.0.1'::inet AS ip, gen_random_uuid() AS u, '\\x0102'::bytea AS b,
                    ARRAY[1,2] AS a, '{"k": 1}'::jsonb AS j, interval '1 hour' AS i, NULL AS nothing"""
    result = await query(client, sql)
    assert not result.is_error, text(result)
    row = result.structured_content["rows"][0]
    assert row[0] == 1.5 and row[1] == "12345678901234567890.123" and row[3] == "10.0.0.1"
    assert row[5] == {"$base64": "AQI="} and row[6] == [1, 2] and row[9] is None
