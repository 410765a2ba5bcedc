"""Shared fixtures for the audit tests: a real store of each kind, and calls to put in it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from server.audit.event import AuditEvent
from server.store import StateStore
from tests.store import conftest as store_fixtures
from tests.store.test_audit_store import Backend

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
KEY = "k" * 16 + "-test-audit-key-0123456789abcdef"


def call(n: int, **changes: object) -> AuditEvent:
    """The n-th call, one hour after the one before, by one of three agents."""
    base = AuditEvent(
        id=f"evt-{n}-{uuid.uuid4().hex[:8]}",
        time=T0 + timedelta(hours=n),
        tool="query",
        decision="allow",
        agent_id=("analyst-bot", "support-bot", "etl-bot")[n % 3],
        arguments={"sql": f"SELECT email FROM customers WHERE id = {n}", "purpose": "audit test"},
        purpose="audit test",
        database="main",
        statement_kind="select",
        tables=("public.customers",),
        pii_columns=("public.customers.email",),
        masked_columns=("public.customers.email",),
        row_count=1,
        duration_ms=1.5,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


#: the audit tests run on each store kind, with the store tests' own fixture
backend = store_fixtures.backend


@pytest.fixture
async def trail(backend: Backend) -> AsyncIterator[StateStore]:
    """An open store of each kind (named `trail` so test_export.py's SQLite `store` stays its own)."""
    opened = await backend.open()
    try:
        yield opened
    finally:
        await opened.close()


async def append_calls(store: StateStore, count: int, start: int = 1) -> None:
    for n in range(start, start + count):
        await store.append_audit(call(n))
