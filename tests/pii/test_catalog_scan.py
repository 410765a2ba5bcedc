"""Classifying a real PostgreSQL catalog: the generated schema of tests/pii/schema.py, with PII in
honest and unhelpful columns, in JSON and in free text, and look-alikes that must stay unflagged.
Results are stored, reused while columns are unchanged, and shown by `bastion catalog scan`."""

from __future__ import annotations

import argparse
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from server.catalog_cli import format_table, register, scan
from server.config import DatabaseConfig, PiiConfig, parse_config
from server.db import open_database
from server.db.base import Database, ExecutionLimits, QueryResult
from server.errors import ConfigError
from server.pii.catalog_scan import classify_catalog, sample_sql
from server.pii.model import ColumnClassification
from server.store import StateStore, open_state_store
from tests.conftest import ScratchDatabase
from tests.pii.schema import EXPECTED, create_schema


class CountingDatabase:
    """The real database, counting the sampling queries that reach it."""

    def __init__(self, inner: Database) -> None:
        self.inner = inner
        self.name = inner.name
        self.dialect = inner.dialect
        self.samples = 0

    async def fetch_read(self, sql: str, limits: ExecutionLimits) -> QueryResult:
        self.samples += 1
        return await self.inner.fetch_read(sql, limits)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
async def pii_db(scratch_db: ScratchDatabase) -> ScratchDatabase:
    await create_schema(scratch_db.app_dsn)
    return scratch_db


@pytest.fixture
async def database(pii_db: ScratchDatabase) -> AsyncIterator[CountingDatabase]:
    db = open_database("main", DatabaseConfig(dsn=pii_db.app_dsn), base_dir=".")
    await db.open()
    try:
        yield CountingDatabase(db)
    finally:
        await db.close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    opened = await open_state_store("sqlite:///state.db", base_dir=str(tmp_path))
    try:
        yield opened
    finally:
        await opened.close()


async def classify(database: CountingDatabase, store: StateStore | None = None, **kwargs: Any) -> dict[Any, Any]:
    catalog = await database.catalog(refresh=True)
    config = kwargs.pop("config", PiiConfig())
    return await classify_catalog(database, catalog, config, store, **kwargs)  # type: ignore[arg-type]


async def test_every_pii_column_of_the_generated_schema_is_found(database: CountingDatabase) -> None:
    got = await classify(database)
    missed = [key for key, entity in EXPECTED.items() if entity is not None and got[("public", *key)].entity is None]
    assert missed == []


async def test_amounts_order_numbers_and_other_look_alikes_are_not_flagged(database: CountingDatabase) -> None:
    got = await classify(database)
    flagged = {key: got[("public", *key)].entity for key, entity in EXPECTED.items() if entity is None}
    assert {key: entity for key, entity in flagged.items() if entity is not None} == {}


async def test_each_column_gets_the_expected_entity_with_evidence(database: CountingDatabase) -> None:
    got = await classify(database)
    assert {key: got[("public", *key)].entity for key in EXPECTED} == EXPECTED
    sample_based = got[("public", "misc", "x2")]
    assert sample_based.source == "sample" and "PHONE_NUMBER" in sample_based.evidence
    assert all("@" not in c.evidence for c in got.values())  # evidence never quotes a value


async def test_classifications_are_stored_and_reused_without_sampling_again(
    database: CountingDatabase, store: StateStore
) -> None:
    first = await classify(database, store)
    sampled = database.samples
    assert sampled > 0
    progress: list[tuple[int, int]] = []
    second = await classify(database, store, progress=lambda done, total: progress.append((done, total)))
    assert second == first
    assert database.samples == sampled  # nothing sampled the second time
    assert progress[-1] == (len(first), len(first))
    refreshed = await classify(database, store, refresh=True)
    assert database.samples > sampled and refreshed.keys() == first.keys()


async def test_a_changed_column_is_classified_again(
    database: CountingDatabase, store: StateStore, pii_db: ScratchDatabase
) -> None:
    await classify(database, store)
    conn = await asyncpg.connect(pii_db.app_dsn)
    try:
        await conn.execute("CREATE TABLE extra (id integer, contact text)")
        await conn.execute("INSERT INTO extra VALUES (1, 'ada@example.com'), (2, 'bob@example.org')")
        await conn.execute("COMMENT ON COLUMN misc.payload IS 'the customer''s email address'")
        got = await classify(database, store)
    finally:
        await conn.execute("DROP TABLE extra")
        await conn.execute("COMMENT ON COLUMN misc.payload IS NULL")
        await conn.close()
    assert got[("public", "extra", "contact")].entity == "EMAIL_ADDRESS"
    assert (got[("public", "misc", "payload")].entity, got[("public", "misc", "payload")].source) == (
        "EMAIL_ADDRESS",
        "comment",
    )


async def test_overrides_from_config_decide(database: CountingDatabase) -> None:
    config = PiiConfig(columns={"public.orders.sku": "PASSPORT", "main.public.misc.x2": "NONE"})
    got = await classify(database, config=config)
    assert (got[("public", "orders", "sku")].entity, got[("public", "orders", "sku")].source) == (
        "PASSPORT",
        "override",
    )
    assert got[("public", "misc", "x2")].entity is None


async def test_an_empty_column_is_not_remembered_as_free_of_pii(
    database: CountingDatabase, store: StateStore, pii_db: ScratchDatabase
) -> None:
    conn = await asyncpg.connect(pii_db.app_dsn)
    try:
        await conn.execute("CREATE TABLE empty_one (id integer, x9 text)")
        got = await classify(database, store)
        stored = await store.load_classifications("main")
    finally:
        await conn.execute("DROP TABLE empty_one")
        await conn.close()
    assert got[("public", "empty_one", "x9")].entity is None
    assert ("public", "empty_one", "x9") not in stored
    assert ("public", "empty_one", "id") in stored


async def test_a_sample_that_cannot_be_read_fails_closed(database: CountingDatabase, pii_db: ScratchDatabase) -> None:
    admin = await asyncpg.connect(pii_db.admin_dsn)
    try:
        await admin.execute("CREATE TABLE locked (id integer, x1 text)")
        await admin.execute("INSERT INTO locked VALUES (1, 'x')")
        got = await classify(database)
    finally:
        await admin.execute("DROP TABLE locked")
        await admin.close()
    assert got[("public", "locked", "x1")].entity == "FREE_TEXT"


def test_sample_queries_quote_identifiers() -> None:
    sql = sample_sql("postgres", 'we"ird', "ta ble", 'co"l', 100)
    assert sql == 'SELECT "co""l"::text FROM "we""ird"."ta ble" WHERE "co""l" IS NOT NULL LIMIT 100'
    assert sample_sql("sqlite", "main", "t", "c", 5).startswith('SELECT CAST("c" AS TEXT) FROM "main"."t"')


async def test_bastion_catalog_scan_prints_a_table_and_stores_it(pii_db: ScratchDatabase, tmp_path: Path) -> None:
    config = parse_config(
        {"databases": {"main": {"dsn": pii_db.app_dsn}}, "state": {"dsn": "sqlite:///state.db"}},
        base_dir=str(tmp_path),
    )
    out, err = io.StringIO(), io.StringIO()
    assert await scan(config, out=out, err=err) == 0
    printed = out.getvalue()
    assert "misc.x2" in printed and "PHONE_NUMBER" in printed and "orders.amount " in printed
    assert "main: " in printed and "with PII" in printed
    store = await open_state_store("sqlite:///state.db", base_dir=str(tmp_path))
    try:
        assert len(await store.load_classifications("main")) >= len(EXPECTED)
    finally:
        await store.close()
    with pytest.raises(ConfigError, match="--database"):
        await scan(config, database="nope", out=out, err=err)


def test_the_catalog_command_registers_scan_with_its_options() -> None:
    parser = argparse.ArgumentParser(prog="bastion")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["catalog", "scan", "--database", "main", "--refresh", "--config", "b.yaml"])
    assert (args.catalog_command, args.database, args.refresh, args.config) == ("scan", "main", True, "b.yaml")


def test_the_table_shows_entity_confidence_source_and_evidence() -> None:
    rows = [
        ColumnClassification(
            "main", "public", "t", "email", "EMAIL_ADDRESS", 0.9, "name 'email' matches email", "name"
        ),
        ColumnClassification("main", "hr", "t", "id", None, 0.9, "type integer", "type"),
    ]
    table = format_table("main", rows).splitlines()
    assert table[0] == "database main"
    assert table[1].split() == ["column", "entity", "conf", "source", "evidence"]
    assert table[2].split()[:4] == ["hr.t.id", "-", "0.90", "type"]
    assert table[3].split()[:4] == ["t.email", "EMAIL_ADDRESS", "0.90", "name"]
