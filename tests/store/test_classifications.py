"""Catalog classifications in the state store (migration 2), on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from server.pii.model import ColumnClassification
from server.store import StateStore, open_state_store
from server.store.migrations import LATEST_VERSION, MIGRATIONS
from tests.conftest import ScratchDatabase
from tests.store.test_audit_store import new_pg_schema


def classification(column: str, entity: str | None = "EMAIL_ADDRESS", database: str = "main") -> ColumnClassification:
    return ColumnClassification(
        database=database,
        schema="public",
        table="customers",
        column=column,
        entity=entity,
        confidence=0.9,
        evidence=f"name {column!r} matches email",
        source="name",
        fingerprint="abc123",
    )


@pytest.fixture(params=["sqlite", "postgres"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, scratch_db: ScratchDatabase
) -> AsyncIterator[StateStore]:
    if request.param == "sqlite":
        opened = await open_state_store("sqlite:///state.db", base_dir=str(tmp_path))
    else:
        opened = await open_state_store(await new_pg_schema(scratch_db), base_dir=".")
    try:
        yield opened
    finally:
        await opened.close()


async def test_saved_classifications_load_back_by_column(store: StateStore) -> None:
    saved = [classification("email"), classification("id", entity=None)]
    await store.save_classifications(saved)
    loaded = await store.load_classifications("main")
    assert loaded == {c.key: c for c in saved}


async def test_saving_a_column_again_replaces_its_classification(store: StateStore) -> None:
    await store.save_classifications([classification("email")])
    changed = replace(classification("email"), entity="FREE_TEXT", confidence=0.5, fingerprint="def456")
    await store.save_classifications([changed])
    assert await store.load_classifications("main") == {changed.key: changed}


async def test_classifications_are_kept_per_database(store: StateStore) -> None:
    await store.save_classifications([classification("email"), classification("email", database="other")])
    assert list((await store.load_classifications("other")).values()) == [classification("email", database="other")]
    assert await store.load_classifications("nowhere") == {}


async def test_saving_nothing_writes_nothing(store: StateStore) -> None:
    await store.save_classifications([])
    assert await store.load_classifications("main") == {}


async def test_a_version_1_sqlite_store_is_migrated_to_hold_classifications(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, description TEXT NOT NULL)")
    for statement in MIGRATIONS[0].sqlite:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, 'audit trail and its chain head')")
    conn.commit()
    conn.close()

    store = await open_state_store("sqlite:///state.db", base_dir=str(tmp_path))
    try:
        await store.save_classifications([classification("email")])
        assert len(await store.load_classifications("main")) == 1
    finally:
        await store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == LATEST_VERSION
    finally:
        conn.close()
