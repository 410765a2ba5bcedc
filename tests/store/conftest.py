"""Each store kind, opened: the fixtures every store and audit test parametrizes over."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.store import StateStore
from tests.conftest import ScratchDatabase
from tests.store.test_audit_store import Backend, new_pg_schema


@pytest.fixture(params=["sqlite", "postgres"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path, scratch_db: ScratchDatabase) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", "sqlite:///state/audit.db", tmp_path)
    return Backend("postgres", await new_pg_schema(scratch_db), tmp_path)


@pytest.fixture
async def store(backend: Backend) -> AsyncIterator[StateStore]:
    opened = await backend.open()
    try:
        yield opened
    finally:
        await opened.close()
