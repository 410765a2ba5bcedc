"""The SQLite backend: a read-only file, an authorizer as the second lock, a progress handler as the
statement timeout, and no blocking of the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.config import DatabaseConfig
from server.db import open_database, sqlite_file
from server.db.base import ExecutionLimits
from server.db.sqlite import SqliteDatabase, _Guard
from server.errors import ConfigError, QueryFailed

LIMITS = ExecutionLimits(max_rows=1000, max_result_bytes=1_000_000, statement_timeout_ms=5000)

SCHEMA = """
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    name VARCHAR(80),
    score REAL DEFAULT 0
);
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers,
    total NUMERIC,
    note
);
CREATE TABLE order_lines (
    order_id INTEGER NOT NULL,
    line_no INTEGER NOT NULL,
    sku TEXT,
    PRIMARY KEY (order_id, line_no),
    FOREIGN KEY (order_id) REFERENCES orders (id)
);
CREATE VIEW customer_emails AS SELECT id, email FROM customers;
INSERT INTO customers (email, name, score) VALUES
    ('alice@example.com', 'Alice', 10.5), ('bob@example.com', 'Bob', 3), ('carol@example.com', NULL, 0);
INSERT INTO orders (customer_id, total) VALUES (1, 100), (1, 20), (2, 5);
"""


def limits(**overrides: int) -> ExecutionLimits:
    values = {"max_rows": 1000, "max_result_bytes": 1_000_000, "statement_timeout_ms": 5000, **overrides}
    return ExecutionLimits(**values)


@pytest.fixture
def demo_file(tmp_path: Path) -> Path:
    path = tmp_path / "demo.db"
    conn = sqlite3.connect(path)
    conn.executescript(SCHEMA)
    conn.commit()
    conn.close()
    return path


@pytest.fixture
async def db(demo_file: Path) -> AsyncIterator[SqliteDatabase]:
    database = open_database(
        "demo", DatabaseConfig(dsn="sqlite:///demo.db", read_only=False), base_dir=str(demo_file.parent)
    )
    assert isinstance(database, SqliteDatabase)
    await database.open()
    yield database
    await database.close()


def count_customers(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT count(*) FROM customers").fetchone()[0]
    finally:
        conn.close()


# --- factory and opening ------------------------------------------------------------------------


def test_relative_sqlite_paths_are_resolved_from_the_base_dir() -> None:
    assert sqlite_file("sqlite:///data/demo.db", "/etc/bastion") == Path("/etc/bastion/data/demo.db")
    assert sqlite_file("sqlite:////var/lib/demo.db", "/etc/bastion") == Path("/var/lib/demo.db")
    with pytest.raises(ConfigError):
        sqlite_file("sqlite:///demo.db?mode=rw", "/etc/bastion")


async def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    database = open_database("demo", DatabaseConfig(dsn="sqlite:///absent.db"), base_dir=str(tmp_path))
    with pytest.raises(ConfigError) as caught:
        await database.open()
    assert "does not exist" in caught.value.message
    assert not (tmp_path / "absent.db").exists()


async def test_a_file_that_is_not_a_database_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "junk.db").write_bytes(b"this is not a database" * 100)
    database = open_database("demo", DatabaseConfig(dsn="sqlite:///junk.db"), base_dir=str(tmp_path))
    with pytest.raises(ConfigError):
        await database.open()


# --- catalog ------------------------------------------------------------------------------------


async def test_catalog_lists_tables_and_views_with_declared_types(db: SqliteDatabase) -> None:
    catalog = await db.catalog()
    assert set(catalog.tables) == {
        ("main", "customers"),
        ("main", "orders"),
        ("main", "order_lines"),
        ("main", "customer_emails"),
    }
    assert (catalog.dialect, catalog.search_path, catalog.schemas) == ("sqlite", ("main",), ("main",))
    customers = catalog.tables[("main", "customers")]
    assert customers.kind == "table"
    assert [(c.name, c.data_type, c.nullable) for c in customers.columns] == [
        ("id", "INTEGER", False),  # the rowid alias is never NULL
        ("email", "TEXT", False),
        ("name", "VARCHAR(80)", True),
        ("score", "REAL", True),
    ]
    assert customers.column("score").default == "0"  # type: ignore[union-attr]
    assert catalog.tables[("main", "orders")].column("note").data_type == ""  # type: ignore[union-attr]
    assert catalog.tables[("main", "customer_emails")].kind == "view"
    assert catalog.find("customers") is customers


async def test_catalog_reports_primary_and_foreign_keys(db: SqliteDatabase) -> None:
    catalog = await db.catalog()
    assert catalog.tables[("main", "customers")].primary_key == ("id",)
    lines = catalog.tables[("main", "order_lines")]
    assert lines.primary_key == ("order_id", "line_no")
    assert [c.primary_key for c in lines.columns] == [True, True, False]
    (fk,) = catalog.tables[("main", "orders")].foreign_keys
    # REFERENCES customers (no column) means the parent's primary key
    assert (fk.columns, fk.ref_schema, fk.ref_table, fk.ref_columns) == (
        ("customer_id",),
        "main",
        "customers",
        ("id",),
    )
    assert lines.foreign_keys[0].ref_columns == ("id",)


async def test_catalog_is_cached_until_refreshed(db: SqliteDatabase, demo_file: Path) -> None:
    first = await db.catalog()
    conn = sqlite3.connect(demo_file)
    conn.execute("CREATE TABLE added_later (x)")
    conn.commit()
    conn.close()
    assert await db.catalog() is first
    assert ("main", "added_later") in (await db.catalog(refresh=True)).tables


# --- reads --------------------------------------------------------------------------------------


async def test_read_returns_rows_with_column_names_and_storage_classes(db: SqliteDatabase) -> None:
    result = await db.fetch_read("SELECT id, email, score, name FROM customers ORDER BY id", LIMITS)
    assert [(c.name, c.type_name) for c in result.columns] == [
        ("id", "INTEGER"),
        ("email", "TEXT"),
        ("score", "REAL"),
        ("name", "TEXT"),
    ]
    assert result.rows[0] == (1, "alice@example.com", 10.5, "Alice")
    assert (result.row_count, result.truncated, result.truncated_by) == (3, False, None)


async def test_rows_beyond_max_rows_are_cut_and_reported(db: SqliteDatabase) -> None:
    sql = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 50) SELECT i FROM n"
    result = await db.fetch_read(sql, limits(max_rows=10))
    assert result.rows == [(i,) for i in range(1, 11)]
    assert (result.truncated, result.truncated_by) == (True, "rows")
    assert not (await db.fetch_read(sql, limits(max_rows=50))).truncated


async def test_result_bytes_beyond_the_cap_are_cut_and_reported(db: SqliteDatabase) -> None:
    sql = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 100) "
        "SELECT i, printf('%.1000c', 'x') FROM n"
    )
    result = await db.fetch_read(sql, limits(max_result_bytes=10_000))
    assert result.truncated_by == "bytes"
    assert 5 <= result.row_count < 10


async def test_a_runaway_query_is_interrupted_at_the_timeout(db: SqliteDatabase) -> None:
    started = time.perf_counter()
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
            limits(statement_timeout_ms=200),
        )
    assert time.perf_counter() - started < 2
    assert caught.value.sqlstate == "57014"
    assert "200 ms" in caught.value.message
    assert (await db.fetch_read("SELECT 1", LIMITS)).rows == [(1,)]


async def test_a_slow_query_does_not_block_the_event_loop(db: SqliteDatabase) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        with pytest.raises(QueryFailed):
            await db.fetch_read(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n",
                limits(statement_timeout_ms=300),
            )
    finally:
        task.cancel()
    assert ticks >= 10


# --- what the database refuses ------------------------------------------------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM customers",
        "UPDATE customers SET name = 'x'",
        "INSERT INTO customers (email) VALUES ('x@example.com')",
        "CREATE TABLE sneaky (x)",
        "CREATE TEMP TABLE sneaky (x)",
        "DROP TABLE orders",
    ],
)
async def test_write_inside_read_is_refused_by_the_database(db: SqliteDatabase, demo_file: Path, sql: str) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read(sql, LIMITS)
    assert caught.value.sqlstate == "25006"
    assert count_customers(demo_file) == 3


@pytest.mark.parametrize(
    ("sql", "what"),
    [
        ("ATTACH DATABASE '/tmp/bastion-attached.db' AS other", "ATTACH"),
        ("PRAGMA table_info(customers)", "PRAGMA"),
        ("PRAGMA writable_schema = ON", "PRAGMA"),
        ("SELECT * FROM pragma_table_info('customers')", "PRAGMA"),
        ("SELECT load_extension('/tmp/evil.so')", "load_extension"),
        ("BEGIN", "transaction control"),
    ],
)
async def test_attach_pragma_and_extensions_are_refused(db: SqliteDatabase, sql: str, what: str) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read(sql, LIMITS)
    assert caught.value.sqlstate == "42501"
    assert what in caught.value.message
    assert not Path("/tmp/bastion-attached.db").exists()


async def test_the_schema_table_cannot_be_modified(db: SqliteDatabase) -> None:
    with pytest.raises(QueryFailed):
        await db.fetch_read("UPDATE sqlite_master SET sql = '' WHERE name = 'customers'", LIMITS)
    assert (await db.fetch_read("SELECT count(*) FROM customers", LIMITS)).rows == [(3,)]


async def test_reads_that_use_table_valued_and_window_functions_are_allowed(db: SqliteDatabase) -> None:
    result = await db.fetch_read("SELECT row_number() OVER (ORDER BY key), value FROM json_each('[10, 20]')", LIMITS)
    assert result.rows == [(1, 10), (2, 20)]
    joined = await db.fetch_read(
        "SELECT c.name, sum(o.total) FROM customers c JOIN orders o ON o.customer_id = c.id "
        "GROUP BY c.name ORDER BY c.name",
        LIMITS,
    )
    assert joined.rows == [("Alice", 120), ("Bob", 5)]


def test_read_authorizer_refuses_writes_even_on_a_writable_connection(demo_file: Path) -> None:
    conn = sqlite3.connect(demo_file, isolation_level=None)
    guard = _Guard()
    conn.set_authorizer(guard)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            conn.execute("DELETE FROM customers")
        assert guard.refused == "write"
    finally:
        conn.close()
    assert count_customers(demo_file) == 3


async def test_the_read_connection_is_opened_read_only(db: SqliteDatabase, demo_file: Path) -> None:
    """The second lock on its own: with the authorizer out of the way, the file still refuses."""

    def attempt() -> str:
        conn, guard = db._connection(write=False)
        guard.mode = "internal"
        try:
            conn.execute("DELETE FROM customers")
        except sqlite3.Error as error:
            return str(error)
        finally:
            guard.mode = "read"
        return "deleted"

    message = await db._in_readers(attempt)
    assert "readonly" in message or "query_only" in message
    assert count_customers(demo_file) == 3


async def test_multiple_statements_are_refused(db: SqliteDatabase, demo_file: Path) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read("SELECT 1; DELETE FROM customers", LIMITS)
    assert caught.value.sqlstate == "42601"
    assert "one statement" in caught.value.message
    assert count_customers(demo_file) == 3
    assert (await db.fetch_read("SELECT 1; -- trailing comment", LIMITS)).rows == [(1,)]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT json_extract('{}', email) FROM customers",
        "SELECT json(email) FROM customers",
        "SELECT CAST(x'ff' AS TEXT) || email FROM customers",
    ],
)
async def test_errors_from_bad_values_do_not_echo_them(db: SqliteDatabase, sql: str) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read(sql, LIMITS)
    text = str(caught.value)
    assert "alice" not in text and "example.com" not in text


async def test_a_run_time_message_that_quotes_a_value_is_replaced(db: SqliteDatabase, demo_file: Path) -> None:
    conn = sqlite3.connect(demo_file)
    conn.executescript(
        "CREATE VIRTUAL TABLE notes USING fts5(body);"
        "INSERT INTO notes VALUES ('call alice'); CREATE TABLE probes (q TEXT);"
        "INSERT INTO probes VALUES ('secretvalue:alice');"
    )
    conn.close()
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read("SELECT * FROM notes, probes WHERE notes MATCH probes.q", LIMITS)
    assert "secretvalue" not in str(caught.value)


async def test_undefined_names_pass_the_message_through(db: SqliteDatabase) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read("SELECT nope FROM customers", LIMITS)
    assert (caught.value.sqlstate, caught.value.message) == ("42703", "no such column: nope")


async def test_huge_values_are_refused_by_the_length_limit(db: SqliteDatabase) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read("SELECT length(zeroblob(500000000))", LIMITS)
    assert caught.value.sqlstate == "54000"


# --- explain ------------------------------------------------------------------------------------


async def test_explain_returns_the_query_plan_without_running_it(db: SqliteDatabase, demo_file: Path) -> None:
    plan = await db.explain("SELECT * FROM customers WHERE email = 'x'", LIMITS)
    assert any("customers" in line and "INDEX" in line for line in plan)
    await db.explain("DELETE FROM customers WHERE id IN (SELECT customer_id FROM orders)", LIMITS)
    assert count_customers(demo_file) == 3
    with pytest.raises(QueryFailed):
        await db.explain("SELECT 1; DELETE FROM customers", LIMITS)


# --- writes -------------------------------------------------------------------------------------


async def test_write_commits_and_reports_the_affected_rows(db: SqliteDatabase, demo_file: Path) -> None:
    inserted = await db.execute_write("INSERT INTO customers (email) VALUES ('dan@example.com')", LIMITS)
    assert inserted.affected_rows == 1
    updated = await db.execute_write("UPDATE customers SET score = score + 1", LIMITS)
    assert updated.affected_rows == 4
    returned = await db.execute_write("UPDATE customers SET score = score RETURNING id", limits(max_rows=2))
    assert (returned.row_count, returned.truncated_by, returned.affected_rows) == (2, "rows", 4)
    assert count_customers(demo_file) == 4


async def test_a_failed_write_is_rolled_back_and_names_no_value(db: SqliteDatabase, demo_file: Path) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.execute_write("INSERT INTO customers (email) VALUES ('alice@example.com')", LIMITS)
    assert caught.value.sqlstate == "23505"
    assert "customers.email" in caught.value.message
    assert "alice" not in str(caught.value)
    with pytest.raises(QueryFailed) as caught:
        await db.execute_write("INSERT INTO orders (customer_id) VALUES (99)", LIMITS)
    assert caught.value.sqlstate == "23503"  # foreign keys are enforced on writes
    assert count_customers(demo_file) == 3


@pytest.mark.parametrize("sql", ["COMMIT", "ATTACH DATABASE ':memory:' AS other", "PRAGMA foreign_keys = OFF"])
async def test_a_write_cannot_escape_its_transaction_or_the_file(db: SqliteDatabase, sql: str) -> None:
    # a write first, so that Bastion's own BEGIN and COMMIT have run on this connection
    await db.execute_write("UPDATE customers SET score = score", LIMITS)
    with pytest.raises(QueryFailed) as caught:
        await db.execute_write(sql, LIMITS)
    assert caught.value.sqlstate == "42501"
    assert (await db.execute_write("UPDATE customers SET score = score", LIMITS)).affected_rows == 3


async def test_write_on_a_read_only_database_is_refused(demo_file: Path) -> None:
    database = open_database("demo", DatabaseConfig(dsn=f"sqlite:///{demo_file}"), base_dir="/")
    await database.open()
    try:
        with pytest.raises(QueryFailed) as caught:
            await database.execute_write("DELETE FROM customers", LIMITS)  # type: ignore[attr-defined]
        assert caught.value.sqlstate == "25006"
    finally:
        await database.close()
    assert count_customers(demo_file) == 3


async def test_a_closed_database_refuses_calls(db: SqliteDatabase) -> None:
    await db.close()
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read("SELECT 1", LIMITS)
    assert "unreachable" in caught.value.message


async def test_parameter_placeholders_are_refused_with_a_hint(db: SqliteDatabase) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read("SELECT * FROM customers WHERE id = ?", LIMITS)
    assert caught.value.sqlstate == "42P02"
    assert "inline" in (caught.value.hint or "")
