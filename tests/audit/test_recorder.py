"""No audit, no data: the recorder turns every store failure into the same safe refusal."""

from __future__ import annotations

import logging
import math
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from server.audit.chain import verify_chain
from server.audit.event import AuditEvent
from server.audit.recorder import AuditRecorder
from server.errors import AuditUnavailable
from server.store import open_state_store
from server.store.sqlite import SQLiteStore
from tests.conftest import ScratchDatabase, create_scratch_database, drop_scratch_database

SECRET = "s3cret-pw"
MESSAGE = "the audit trail could not be written, so no data was returned"


def event(**changes: object) -> AuditEvent:
    values: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "time": datetime.now(UTC),
        "tool": "query",
        "decision": "allow",
        "agent_id": "analyst-bot",
        "arguments": {"sql": "SELECT 1"},
        **changes,
    }
    return AuditEvent(**values)  # type: ignore[arg-type]


def with_password(dsn: str) -> str:
    """The same DSN with a password in it; the server trusts the role, so the password only has to
    not show up anywhere."""
    parts = urlsplit(dsn)
    netloc = f"{parts.username}:{SECRET}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def assert_safe_refusal(error: AuditUnavailable) -> None:
    assert error.message == MESSAGE
    assert error.hint and "state store" in error.hint
    assert error.code == "audit_unavailable"
    text = f"{error} {error!r}"
    for leak in (SECRET, "postgresql://", "sqlite:///", "SQLSTATE", "locked"):
        assert leak not in text
    assert error.__cause__ is None and error.__suppress_context__


async def test_a_recorded_event_is_committed_before_record_returns(tmp_path: Path) -> None:
    store = await open_state_store("sqlite:///state.db", base_dir=str(tmp_path))
    try:
        stored = await AuditRecorder(store).record(event())
        assert stored.sequence == 1
    finally:
        await store.close()

    reopened = await open_state_store("sqlite:///state.db", base_dir=str(tmp_path))
    try:
        assert await reopened.audit_events() == [stored]
    finally:
        await reopened.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_closed_store_fails_the_call_without_saying_where_it_is(
    backend: str, tmp_path: Path, scratch_db: ScratchDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    dsn = "sqlite:///state.db" if backend == "sqlite" else with_password(scratch_db.app_dsn)
    store = await open_state_store(dsn, base_dir=str(tmp_path))
    await store.close()

    with pytest.raises(AuditUnavailable) as caught, caplog.at_level(logging.ERROR):
        await AuditRecorder(store).record(event())

    assert_safe_refusal(caught.value)
    assert "closed" in caplog.text


async def test_postgres_going_away_fails_the_call_and_logs_why_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = await create_scratch_database()
    try:
        store = await open_state_store(with_password(db.app_dsn), base_dir=".")
        recorder = AuditRecorder(store)
        await recorder.record(event())
    finally:
        await drop_scratch_database(db.name)  # terminates the store's connections too

    try:
        with pytest.raises(AuditUnavailable) as caught, caplog.at_level(logging.ERROR):
            await recorder.record(event())
    finally:
        await store.close()

    assert_safe_refusal(caught.value)
    assert "could not be written" in caplog.text
    assert SECRET not in caplog.text


async def test_a_locked_sqlite_store_fails_the_call_and_the_next_call_continues_the_chain(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await SQLiteStore.open(tmp_path / "state.db", busy_timeout_ms=50)
    recorder = AuditRecorder(store)
    other = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
        with pytest.raises(AuditUnavailable) as caught, caplog.at_level(logging.ERROR):
            await recorder.record(event())
        other.execute("ROLLBACK")

        stored = await recorder.record(event())
        assert stored.sequence == 1  # the failed append took no sequence
        assert verify_chain(await store.audit_events()) is None
    finally:
        other.close()
        await store.close()

    assert_safe_refusal(caught.value)
    assert "database is locked" in caplog.text


async def test_an_event_the_store_cannot_encode_fails_the_call(tmp_path: Path) -> None:
    store = await open_state_store("sqlite:///state.db", base_dir=str(tmp_path))
    try:
        with pytest.raises(AuditUnavailable) as caught:
            await AuditRecorder(store).record(event(duration_ms=math.inf))
        assert await store.audit_events() == []
    finally:
        await store.close()

    assert_safe_refusal(caught.value)
