"""PII is masked before any value leaves, through aliases, expressions and whole-row references,
on the real PostgreSQL through a real MCP session; non-PII values come back byte for byte."""

from __future__ import annotations

import json

import pytest
from mcp import Client

from tests.tools.test_query import query, text

RAW_EMAILS = [f"customer{i}@example.com" for i in range(1, 41)]

EXFILTRATION = [
    "SELECT email FROM customers",
    "SELECT email AS note FROM customers",
    "SELECT upper(email) FROM customers",
    "SELECT email || '' AS x FROM customers",
    "SELECT substr(email, 1, 40) FROM customers",
    "SELECT CASE WHEN true THEN email END FROM customers",
    "SELECT (SELECT email FROM customers c2 WHERE c2.id = c.id) FROM customers c",
    "SELECT x FROM (SELECT email AS x FROM customers) s",
    "WITH c AS (SELECT email FROM customers) SELECT * FROM c",
    "SELECT name FROM products UNION ALL SELECT email FROM customers",
    "SELECT json_agg(c) FROM customers c",
    "SELECT row_to_json(c.*) FROM customers c",
    "SELECT to_jsonb(c) ->> 'email' FROM customers c",
    "SELECT string_agg(email, ',') FROM customers",
    "SELECT array_agg(email) FROM customers",
    "SELECT first_value(email) OVER (ORDER BY id) FROM customers",
    "SELECT l.e FROM orders o, LATERAL (SELECT email AS e FROM customers WHERE id = o.customer_id) l",
    "SELECT c::text FROM customers c",
    "SELECT * FROM customers",
    "SELECT max(email) FROM customers",
]


@pytest.mark.parametrize("sql", EXFILTRATION)
async def test_no_raw_email_comes_back_through_any_query_shape(client: Client, sql: str) -> None:
    result = await query(client, sql)
    assert not result.is_error, text(result)
    payload = json.dumps(result.structured_content) + text(result)
    leaked = [email for email in RAW_EMAILS if email in payload]
    assert not leaked, f"{sql} leaked {leaked[:3]}"


async def test_counting_pii_reveals_nothing_and_is_not_masked(client: Client) -> None:
    result = await query(client, "SELECT count(DISTINCT email) FROM customers")
    assert result.structured_content["rows"] == [[40]]
    assert result.structured_content["columns"][0]["masked"] is False


async def test_hash_masking_keeps_joins_and_group_bys_working(client: Client) -> None:
    result = await query(
        client,
        "SELECT email, count(*) FROM customers c JOIN orders o ON o.customer_id = c.id "
        "GROUP BY email ORDER BY 2 DESC, 1 LIMIT 3",
    )
    rows = result.structured_content["rows"]
    assert all(row[0].startswith("email:") for row in rows)
    again = await query(client, "SELECT email FROM customers WHERE id = 1")
    first = await query(client, "SELECT email FROM customers WHERE id = 1")
    assert again.structured_content["rows"] == first.structured_content["rows"]


async def test_non_pii_columns_come_back_exactly(client: Client) -> None:
    result = await query(client, "SELECT id, country, created_at FROM customers ORDER BY id LIMIT 2")
    assert result.structured_content["rows"] == [
        [1, "FR", "2026-01-01T00:00:00+00:00"],
        [2, "US", "2026-01-01T00:00:00+00:00"],
    ]
    assert not any(c["masked"] for c in result.structured_content["columns"])


async def test_reads_of_pii_need_a_purpose(client: Client) -> None:
    result = await client.call_tool("query", {"sql": "SELECT email FROM customers"})
    assert result.is_error and "purpose" in text(result)
    ok = await client.call_tool("query", {"sql": "SELECT country FROM customers LIMIT 1"})
    assert not ok.is_error, text(ok)


async def test_describe_shows_the_entity_and_the_mask(client: Client) -> None:
    result = await client.call_tool("describe", {"table": "customers"})
    columns = {c["name"]: c for c in result.structured_content["table"]["columns"]}
    assert columns["email"]["pii_entity"] == "EMAIL_ADDRESS" and columns["email"]["access"] == "masked"
    assert columns["country"]["pii_entity"] is None and columns["country"]["access"] == "read"
