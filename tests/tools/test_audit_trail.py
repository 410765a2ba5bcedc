"""Every call through an MCP session leaves exactly one committed audit event, before it answers."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest
from mcp import Client

from server.app import build_server
from server.config import BastionConfig
from server.store import open_state_store
from tests.conftest import ScratchDatabase, create_scratch_database, drop_scratch_database
from tests.tools.conftest import shop_config
from tests.tools.test_query import text


async def events_of(config: BastionConfig) -> list:
    store = await open_state_store(config.state.dsn, base_dir=config.base_dir)
    try:
        return [stored.event for stored in await store.audit_events()]
    finally:
        await store.close()


async def test_every_call_leaves_exactly_one_event(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    config = shop_config(shop_db, tmp_path)
    calls = [
        ("describe", {}),
        ("describe", {"table": "customers"}),
        ("query", {"sql": "SELECT count(*) FROM customers", "purpose": "count customers"}),
        ("query", {"sql": "DROP TABLE customers", "purpose": "oops"}),
        ("query", {"sql": "SELEC broken", "purpose": "typo"}),
        ("explain", {"sql": "SELECT * FROM orders"}),
        ("query", {"sql": "SELECT 1", "max_rows": "many"}),
        ("no_such_tool", {}),
    ]
    async with Client(build_server(config, transport="memory"), mode="legacy") as client:
        for tool, arguments in calls:
            await client.call_tool(tool, arguments, meta={"bastion/conversation_id": "conv-7"})
    events = await events_of(config)
    assert [e.tool for e in events] == [tool for tool, _ in calls]
    by_tool = list(zip(calls, events, strict=True))
    allowed = by_tool[2][1]
    assert allowed.decision == "allow" and allowed.row_count == 1 and allowed.purpose == "count customers"
    assert allowed.agent_id == "test-agent" and allowed.groups == ("analytics",)
    assert allowed.client_name == "mcp" and allowed.transport == "memory" and allowed.session_id
    assert allowed.tables == ("public.customers",) and allowed.statement_kind == "select"
    assert allowed.request_meta == {"bastion/conversation_id": "conv-7"}
    denied = by_tool[3][1]
    assert denied.decision == "deny" and denied.statement_kind == "ddl" and denied.reasons
    assert by_tool[4][1].decision == "deny" and by_tool[4][1].error
    assert by_tool[6][1].decision == "error" and by_tool[7][1].decision == "error"
    assert len({e.session_id for e in events}) == 1


async def test_no_audit_no_data(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    state_db = await create_scratch_database("bastion_state")
    try:
        config = shop_config(shop_db, tmp_path)
        config = config.model_copy(update={"state": config.state.model_copy(update={"dsn": state_db.app_dsn})})
        async with Client(build_server(config, transport="memory"), mode="legacy") as client:
            ok = await client.call_tool("query", {"sql": "SELECT email FROM customers", "purpose": "p"})
            assert not ok.is_error, text(ok)
            admin = await asyncpg.connect(state_db.admin_dsn)
            try:
                await admin.execute("ALTER TABLE audit_events RENAME TO audit_events_moved")
            finally:
                await admin.close()
            result = await client.call_tool("query", {"sql": "SELECT email FROM customers", "purpose": "p"})
            assert result.is_error
            assert "audit" in text(result).lower() and "@example.com" not in text(result)
            assert result.structured_content is None
    finally:
        await drop_scratch_database(state_db.name)


@pytest.mark.parametrize("port", [1])
async def test_a_database_that_is_down_gets_a_clear_error_and_others_keep_working(
    shop_db: ScratchDatabase, tmp_path: Path, port: int
) -> None:
    config = shop_config(shop_db, tmp_path)
    down = config.databases["main"].model_copy(update={"dsn": f"postgresql://app:secret@127.0.0.1:{port}/x"})
    config = config.model_copy(update={"databases": {**config.databases, "down": down}})
    async with Client(build_server(config, transport="memory"), mode="legacy") as client:
        result = await client.call_tool("query", {"sql": "SELECT 1", "database": "down", "purpose": "p"})
        assert result.is_error and "unreachable" in text(result)
        assert "secret" not in text(result)
        ok = await client.call_tool("query", {"sql": "SELECT 1 AS one", "purpose": "p"})
        assert not ok.is_error, text(ok)
