"""The example policies decide through real MCP sessions, on the real PostgreSQL; a policy edit
changes a running server's decisions within two seconds."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import asyncpg
import pytest
from mcp import Client

from server.app import build_server
from server.config import BastionConfig, parse_config
from server.policy.schema import SHIPPED_POLICIES
from server.store import open_state_store
from tests.conftest import ScratchDatabase
from tests.tools.test_query import text

ACME_SQL = """
CREATE SCHEMA sales; CREATE SCHEMA hr; CREATE SCHEMA support;
CREATE TABLE sales.customers (id integer PRIMARY KEY, full_name text, email text, phone text, card_number text,
                              region text, country text);
CREATE TABLE sales.orders (id integer PRIMARY KEY, customer_id integer, amount numeric, region text, ordered_at date);
CREATE TABLE sales.products (id integer PRIMARY KEY, name text, price numeric);
CREATE TABLE hr.employees (id integer PRIMARY KEY, full_name text, email text, national_id text, salary numeric);
CREATE TABLE support.tickets (id integer PRIMARY KEY, customer_id integer, requester_email text, subject text,
                              status text);
INSERT INTO sales.customers SELECT i, 'Name ' || i, 'c' || i || '@example.com', '+1 555 0100', '4111111111111111',
    CASE WHEN i % 2 = 0 THEN 'EU' ELSE 'US' END, 'X' FROM generate_series(1, 10) AS i;
INSERT INTO sales.orders SELECT i, 1 + i % 10, i * 10, CASE WHEN i % 3 = 0 THEN 'EU' ELSE 'US' END,
    DATE '2026-01-01' + i FROM generate_series(1, 30) AS i;
INSERT INTO sales.products VALUES (1, 'Lamp', 20);
INSERT INTO hr.employees VALUES (1, 'Ada', 'ada@example.com', '123-45-6789', 100);
INSERT INTO support.tickets VALUES (1, 1, 'c1@example.com', 'Broken lamp', 'open');
"""

PII = {
    "sales.customers.full_name": "PERSON",
    "sales.customers.email": "EMAIL_ADDRESS",
    "sales.customers.phone": "PHONE_NUMBER",
    "sales.customers.card_number": "CREDIT_CARD",
    "hr.employees.full_name": "PERSON",
    "hr.employees.email": "EMAIL_ADDRESS",
    "hr.employees.national_id": "US_SSN",
    "support.tickets.requester_email": "EMAIL_ADDRESS",
}
AGENTS = {
    "analyst-bot": ["analytics"],
    "eu-bot": ["eu-analysts"],
    "support-bot": ["support"],
    "scraper-bot": [],
}


@pytest.fixture(scope="module")
async def acme(scratch_db: ScratchDatabase) -> ScratchDatabase:
    conn = await asyncpg.connect(scratch_db.app_dsn)
    try:
        await conn.execute(ACME_SQL)
    finally:
        await conn.close()
    return scratch_db


def acme_config(db: ScratchDatabase, folder: Path, agent: str, policies: Path) -> BastionConfig:
    return parse_config(
        {
            "databases": {"main": {"dsn": db.app_dsn}},
            "state": {"dsn": f"sqlite:///{folder / 'state.db'}"},
            "policies": str(policies),
            "pii": {"columns": PII},
            "identity": {"stdio_agent": agent, "agents": {a: {"groups": g} for a, g in AGENTS.items()}},
        },
        base_dir=str(folder),
    )


def session(db: ScratchDatabase, folder: Path, agent: str, policies: Path | None = None) -> Client:
    config = acme_config(db, folder, agent, policies or SHIPPED_POLICIES / "examples")
    return Client(build_server(config, transport="memory"), mode="legacy")


async def run_query(client: Client, sql: str) -> tuple[bool, str, dict | None]:
    result = await client.call_tool("query", {"sql": sql, "purpose": "policy e2e"})
    return result.is_error, text(result), result.structured_content


async def test_analytics_reads_sales_but_never_hr(acme: ScratchDatabase, tmp_path: Path) -> None:
    async with session(acme, tmp_path, "analyst-bot") as client:
        failed, _, data = await run_query(client, "SELECT count(*) FROM sales.orders")
        assert not failed and data["rows"] == [[30]] and "analytics-sales" in data["decision"]["policy_ids"]
        failed, message, _ = await run_query(client, "SELECT salary FROM hr.employees")
        assert failed and message.startswith("Refused:")
        explained = await client.call_tool("explain", {"sql": "SELECT email, card_number FROM sales.customers"})
        masks = explained.structured_content["masks"]
        assert masks == {"sales.customers.email": "default", "sales.customers.card_number": "partial"}


async def test_the_eu_row_filter_is_enforced_by_rewriting_the_query(acme: ScratchDatabase, tmp_path: Path) -> None:
    async with session(acme, tmp_path, "eu-bot") as client:
        failed, message, data = await run_query(
            client, "SELECT o.region, count(*) FROM sales.orders o GROUP BY o.region ORDER BY 1"
        )
        assert not failed, message
        assert data["rows"] == [["EU", 10]]
        failed, message, data = await run_query(
            client,
            "SELECT count(*) FROM sales.orders o WHERE o.customer_id IN (SELECT id FROM sales.customers)",
        )
        assert not failed, message
        # the filter applies in the subquery too: EU orders of EU customers only
        assert data["rows"] == [[5]]
        explained = await client.call_tool("explain", {"sql": "SELECT id FROM sales.orders"})
        assert "'EU'" in explained.structured_content["sql"]
        assert explained.structured_content["row_limit"] <= 500


async def test_a_blocked_agent_gets_nothing(acme: ScratchDatabase, tmp_path: Path) -> None:
    async with session(acme, tmp_path, "scraper-bot") as client:
        failed, message, _ = await run_query(client, "SELECT name FROM sales.products")
        assert failed and "INC-2291" in message
        described = await client.call_tool("describe", {})
        access = {t["name"]: t["access"] for s in described.structured_content["schemas"] for t in s["tables"]}
        assert set(access.values()) == {"denied"}


async def test_describe_shows_masks_per_column_for_the_caller(acme: ScratchDatabase, tmp_path: Path) -> None:
    async with session(acme, tmp_path, "support-bot") as client:
        described = await client.call_tool("describe", {"table": "sales.customers"})
        columns = {c["name"]: c for c in described.structured_content["table"]["columns"]}
        assert columns["email"]["pii_entity"] == "EMAIL_ADDRESS" and columns["email"]["access"] == "read"
        assert columns["card_number"]["access"] in ("masked", "denied")
        assert columns["region"]["pii_entity"] is None and columns["region"]["access"] == "read"


async def test_a_policy_edit_reaches_a_running_server_within_two_seconds(acme: ScratchDatabase, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(SHIPPED_POLICIES / "examples", policies)
    async with session(acme, tmp_path, "analyst-bot", policies) as client:
        failed, _, _ = await run_query(client, "SELECT count(*) FROM sales.products")
        assert not failed
        (policies / "zz-freeze.cedar").write_text(
            '@id("freeze-products")\n@reason("products are frozen for the audit")\n'
            'forbid (principal, action == Action::"select", resource == Table::"main.sales.products");\n'
        )
        started = time.monotonic()
        while True:
            failed, message, _ = await run_query(client, "SELECT count(*) FROM sales.products")
            if failed:
                break
            assert time.monotonic() - started < 2.5, "the policy edit was not picked up"
            await asyncio.sleep(0.1)
        assert "frozen for the audit" in message

        (policies / "zz-broken.cedar").write_text('permit (principal, action == Action::"select" resource);\n')
        await asyncio.sleep(2.0)
        failed, message, _ = await run_query(client, "SELECT count(*) FROM sales.products")
        assert failed and "frozen for the audit" in message  # the running policies stayed
        failed, _, _ = await run_query(client, "SELECT count(*) FROM sales.orders")
        assert not failed

    store = await open_state_store(f"sqlite:///{tmp_path / 'state.db'}", base_dir=str(tmp_path))
    try:
        events = [e.event for e in await store.audit_events()]
    finally:
        await store.close()
    refusals = [e for e in events if e.tool == "(policy reload)"]
    assert len(refusals) == 1 and "zz-broken.cedar" in " ".join(refusals[0].reasons)
    versions = {e.policy_version for e in events if e.tool == "query"}
    assert len(versions) == 2
