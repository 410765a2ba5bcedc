"""Fixtures for the approval tests: the shop database (writable), a configuration written to disk
(so the real `bastion approvals` command line reads the same file), MCP sessions, and the CLI.

Each test gets its own folder and, where it asks for PostgreSQL, its own state store database, so
approvals and audit trails never leak between tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from mcp import Client
from mcp_types import CallToolResult

from server.app import build_server
from server.audit.event import AuditEvent
from server.config import ApprovalsConfig, BastionConfig, load_config
from server.store import open_state_store
from tests.conftest import ScratchDatabase, create_scratch_database, drop_scratch_database
from tests.shop import create_shop

UPDATE = "UPDATE customers SET country = 'CH' WHERE id = 7"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
async def shop_db(scratch_db: ScratchDatabase) -> ScratchDatabase:
    await create_shop(scratch_db.app_dsn)
    return scratch_db


@pytest.fixture
async def pg_state() -> AsyncIterator[str]:
    """A PostgreSQL state store of this test's own."""
    db = await create_scratch_database("bastion_state")
    try:
        yield db.admin_dsn
    finally:
        await drop_scratch_database(db.name)


@pytest.fixture(params=["postgres", "sqlite"])
async def state_dsn(request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """The state store, once on PostgreSQL (its own database) and once on SQLite (a file)."""
    if request.param == "sqlite":
        yield "sqlite:///state.db"
        return
    db = await create_scratch_database("bastion_state")
    try:
        yield db.admin_dsn
    finally:
        await drop_scratch_database(db.name)


@dataclass
class Setup:
    folder: Path
    config_path: Path
    config: BastionConfig
    shop: ScratchDatabase

    def server(self, **overrides: Any) -> Any:
        return build_server(self.config, transport="memory")

    async def state_store(self) -> Any:
        return await open_state_store(self.config.state.dsn, base_dir=self.config.base_dir)

    async def events(self) -> list[AuditEvent]:
        store = await self.state_store()
        try:
            return [stored.event for stored in await store.audit_events()]
        finally:
            await store.close()


def make_setup(
    shop: ScratchDatabase,
    folder: Path,
    *,
    state_dsn: str | None = None,
    policies: str | None = None,
    webhook: str | None = None,
    public_url: str | None = None,
    ttl_s: int | None = None,
    users: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
) -> Setup:
    """Write bastion.yaml into `folder` and load it, as an operator's server would."""
    data: dict[str, Any] = {
        "databases": {"main": {"dsn": shop.app_dsn, "read_only": False, "statement_timeout_ms": 3000}},
        "state": {"dsn": state_dsn or "sqlite:///state.db"},
        "identity": {
            "stdio_agent": "writer-bot",
            "agents": {"writer-bot": {"groups": ["etl"]}, "other-bot": {"groups": ["etl"]}},
            "users": users
            if users is not None
            else {"alice": {"groups": ["approvers"]}, "bob": {"groups": ["support"]}},
            **(identity or {}),
        },
    }
    if policies is not None:
        data["policies"] = policies
    if webhook is not None or public_url is not None:
        data["approvals"] = {"webhook": webhook, "public_url": public_url}
    path = folder / "bastion.yaml"
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    if ttl_s is not None:  # below the configurable minimum (10 s), for the expiry test only
        approvals = ApprovalsConfig.model_construct(ttl_s=ttl_s, webhook=webhook, public_url=public_url)
        config = config.model_copy(update={"approvals": approvals})
    return Setup(folder, path, config, shop)


def as_agent(config: BastionConfig, agent: str) -> BastionConfig:
    identity = config.identity.model_copy(update={"stdio_agent": agent})
    return config.model_copy(update={"identity": identity})


@contextlib.asynccontextmanager
async def session(config: BastionConfig, **client_options: Any) -> AsyncIterator[Client]:
    async with Client(build_server(config, transport="memory"), mode="legacy", **client_options) as client:
        yield client


def text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def request(client: Client, sql: str = UPDATE, justification: str = "customer moved", **extra: Any) -> Any:
    return await client.call_tool("request_approval", {"sql": sql, "justification": justification, **extra})


async def query(client: Client, sql: str = UPDATE, **extra: Any) -> CallToolResult:
    return await client.call_tool("query", {"sql": sql, "purpose": "approved fix", **extra})


@dataclass
class CliResult:
    code: int
    out: str
    err: str


async def cli(setup: Setup, *args: str) -> CliResult:
    """The real `bastion` command line, in a subprocess, on this setup's configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "server",
        "approvals",
        "--config",
        str(setup.config_path),
        *args,
        env=env,
        cwd=str(ROOT),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    return CliResult(process.returncode or 0, out.decode(), err.decode())


async def country_of(shop: ScratchDatabase, customer: int) -> str:
    conn = await asyncpg.connect(shop.admin_dsn)
    try:
        return str(await conn.fetchval("SELECT country FROM customers WHERE id = $1", customer))
    finally:
        await conn.close()


async def reset_customer(shop: ScratchDatabase, customer: int = 7, country: str = "US") -> None:
    conn = await asyncpg.connect(shop.admin_dsn)
    try:
        await conn.execute("UPDATE customers SET country = $2 WHERE id = $1", customer, country)
    finally:
        await conn.close()
