"""An MCP client session against a Bastion server over the shop database (in memory)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client

from server.app import build_server
from server.config import BastionConfig, parse_config
from tests.conftest import ScratchDatabase
from tests.shop import create_shop


@pytest.fixture(scope="module")
async def shop_db(scratch_db: ScratchDatabase) -> ScratchDatabase:
    await create_shop(scratch_db.app_dsn)
    return scratch_db


def shop_config(db: ScratchDatabase, state_dir: Path, **database: object) -> BastionConfig:
    return parse_config(
        {
            "databases": {"main": {"dsn": db.app_dsn, "statement_timeout_ms": 2000, "max_rows": 100, **database}},
            "state": {"dsn": f"sqlite:///{state_dir / 'state.db'}"},
            "identity": {"stdio_agent": "test-agent", "agents": {"test-agent": {"groups": ["analytics"]}}},
        },
        base_dir=str(state_dir),
    )


@pytest.fixture(scope="module")
def config(shop_db: ScratchDatabase, tmp_path_factory: pytest.TempPathFactory) -> BastionConfig:
    return shop_config(shop_db, tmp_path_factory.mktemp("state"))


@contextlib.asynccontextmanager
async def client_in_own_task(server: object) -> AsyncIterator[Client]:
    """A client session entered and exited in one background task: anyio's cancel scopes must be
    left by the task that entered them, and pytest runs a fixture's set-up and tear-down in
    different tasks."""
    ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
    done = asyncio.Event()

    async def hold() -> None:
        try:
            async with Client(server, mode="legacy") as session:  # type: ignore[arg-type]
                ready.set_result(session)
                await done.wait()
        except BaseException as error:
            if not ready.done():
                ready.set_exception(error)
            raise

    task = asyncio.create_task(hold())
    try:
        yield await ready
    finally:
        done.set()
        await task


@pytest.fixture(scope="module")
async def client(config: BastionConfig) -> AsyncIterator[Client]:
    async with client_in_own_task(build_server(config, transport="memory")) as session:
        yield session
