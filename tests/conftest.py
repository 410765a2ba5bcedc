"""Shared fixtures: the real PostgreSQL every test talks to.

`BASTION_TEST_DSN` names a server and a role that may create databases; by default the local
`postgres` superuser. Each test module that needs one gets a scratch database of its own, dropped
afterwards. If PostgreSQL cannot be reached the run stops at once and says how to provide one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def admin_dsn() -> str:
    return os.environ.get("BASTION_TEST_DSN", DEFAULT_TEST_DSN)


def dsn_for_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def pytest_sessionstart(session: pytest.Session) -> None:
    async def probe() -> None:
        conn = await asyncpg.connect(admin_dsn(), timeout=5)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as error:  # any failure to connect means the suite cannot run
        pytest.exit(
            f"PostgreSQL is not reachable at {admin_dsn()!r} ({type(error).__name__}). Start it "
            "(pg_ctlcluster --skip-systemctl-redirect 15 main start) or set BASTION_TEST_DSN to a "
            "postgresql:// DSN of a role that may create databases.",
            returncode=3,
        )


APP_ROLE = "bastion_test_app"


@dataclass(frozen=True)
class ScratchDatabase:
    """A scratch database owned by an ordinary role (no superuser, no BYPASSRLS), as Bastion
    expects in production; `admin_dsn` connects as the test server's admin role."""

    name: str
    admin_dsn: str
    app_dsn: str


async def ensure_app_role() -> None:
    conn = await asyncpg.connect(admin_dsn())
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", APP_ROLE)
        if not exists:
            # another test process may create it at the same moment
            with contextlib.suppress(asyncpg.DuplicateObjectError):
                await conn.execute(f'CREATE ROLE "{APP_ROLE}" LOGIN NOSUPERUSER NOBYPASSRLS')
    finally:
        await conn.close()


async def create_scratch_database(prefix: str = "bastion_test") -> ScratchDatabase:
    await ensure_app_role()
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(admin_dsn())
    try:
        await conn.execute(f'CREATE DATABASE "{name}" OWNER "{APP_ROLE}"')
    finally:
        await conn.close()
    admin = dsn_for_database(admin_dsn(), name)
    parts = urlsplit(admin)
    host = parts.hostname or "127.0.0.1"
    port = f":{parts.port}" if parts.port else ""
    app = urlunsplit(parts._replace(netloc=f"{APP_ROLE}@{host}{port}"))
    return ScratchDatabase(name=name, admin_dsn=admin, app_dsn=app)


async def drop_scratch_database(name: str) -> None:
    conn = await asyncpg.connect(admin_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="module")
async def scratch_db() -> AsyncIterator[ScratchDatabase]:
    """A fresh, empty database for this test module, dropped afterwards."""
    db = await create_scratch_database()
    try:
        yield db
    finally:
        await drop_scratch_database(db.name)
