"""The PostgreSQL backend against a real server: what the database itself enforces, and what the
agent gets to see when it refuses."""

from __future__ import annotations

import asyncio
import logging
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from server.config import DatabaseConfig
from server.db import open_database
from server.db.base import ExecutionLimits
from server.db.postgres import PostgresDatabase
from server.errors import ConfigError, QueryFailed


class Scratch(Protocol):
    name: str
    admin_dsn: str
    app_dsn: str


LIMITS = ExecutionLimits(max_rows=1000, max_result_bytes=1_000_000, statement_timeout_ms=5000)

SCHEMA = """
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE TABLE customers (
    id serial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    name varchar(80),
    score numeric(10, 2) DEFAULT 0,
    tags text[],
    meta jsonb,
    feeling mood,
    created timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT score_is_positive CHECK (score >= 0)
);
COMMENT ON TABLE customers IS 'People who buy things';
COMMENT ON COLUMN customers.email IS 'Contact address (PII)';
INSERT INTO customers (email, name, score, tags, meta, feeling) VALUES
    ('alice@example.com', 'Alice', 10.50, '{vip}', '{"tier": 1}', 'happy'),
    ('bob@example.com', 'Bob', 3, '{}', NULL, 'sad'),
    ('carol@example.com', NULL, 0, NULL, NULL, NULL);

CREATE SCHEMA sales;
CREATE TABLE sales.orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    total numeric(12, 2) NOT NULL,
    total_with_tax numeric GENERATED ALWAYS AS (total * 1.2) STORED
);
INSERT INTO sales.orders (customer_id, total) VALUES (1, 100), (1, 20), (2, 5);
CREATE TABLE sales.order_lines (
    order_id bigint NOT NULL,
    line_no integer NOT NULL,
    sku text NOT NULL,
    PRIMARY KEY (order_id, line_no),
    FOREIGN KEY (order_id) REFERENCES sales.orders (id)
);
CREATE TABLE sales.line_notes (
    order_id bigint, line_no integer, note text,
    FOREIGN KEY (order_id, line_no) REFERENCES sales.order_lines (order_id, line_no)
);
CREATE VIEW customer_emails AS SELECT id, email FROM customers;
COMMENT ON VIEW customer_emails IS 'Just the addresses';
CREATE MATERIALIZED VIEW sales.totals AS
    SELECT customer_id, sum(total) AS total FROM sales.orders GROUP BY customer_id;
CREATE TABLE events (id int, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE ledger (id int PRIMARY KEY, amount int NOT NULL);
INSERT INTO ledger SELECT g, g * 10 FROM generate_series(1, 5) g;
CREATE FUNCTION run_sql(statement text) RETURNS int LANGUAGE plpgsql AS
    $$ BEGIN EXECUTE statement; RETURN 1; END $$;
CREATE FUNCTION shout(value text) RETURNS int LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'bad value %', value; END $$;
"""


@pytest.fixture(scope="module")
async def seeded(scratch_db: Scratch) -> Scratch:
    conn = await asyncpg.connect(scratch_db.app_dsn)
    try:
        await conn.execute(SCHEMA)
    finally:
        await conn.close()
    return scratch_db


@pytest.fixture(scope="module")
async def db(seeded: Scratch) -> AsyncIterator[PostgresDatabase]:
    database = PostgresDatabase("main", DatabaseConfig(dsn=seeded.app_dsn, read_only=False, pool_max_size=3))
    await database.open()
    yield database
    await database.close()


@pytest.fixture
async def single_connection(seeded: Scratch) -> AsyncIterator[PostgresDatabase]:
    """A pool of exactly one connection, so consecutive calls share a session."""
    config = DatabaseConfig(dsn=seeded.app_dsn, read_only=False, pool_min_size=1, pool_max_size=1)
    database = PostgresDatabase("main", config)
    await database.open()
    yield database
    await database.close()


def limits(**overrides: int) -> ExecutionLimits:
    values = {"max_rows": 1000, "max_result_bytes": 1_000_000, "statement_timeout_ms": 5000, **overrides}
    return ExecutionLimits(**values)


# --- catalog ------------------------------------------------------------------------------------


async def test_catalog_lists_tables_views_and_materialized_views_with_their_kinds(
    db: PostgresDatabase,
) -> None:
    catalog = await db.catalog(refresh=True)
    kinds = {key: table.kind for key, table in catalog.tables.items()}
    assert kinds[("public", "customers")] == "table"
    assert kinds[("public", "customer_emails")] == "view"
    assert kinds[("sales", "totals")] == "materialized_view"
    assert kinds[("sales", "orders")] == "table"
    assert kinds[("public", "events")] == "table"  # partitioned parent
    assert kinds[("public", "events_2024")] == "table"
    assert catalog.dialect == "postgres"
    assert catalog.database == "main"


async def test_catalog_leaves_out_system_schemas(db: PostgresDatabase) -> None:
    catalog = await db.catalog(refresh=True)
    schemas = {schema for schema, _ in catalog.tables}
    assert schemas == {"public", "sales"}
    assert catalog.schemas == ("public", "sales")
    assert catalog.search_path == ("public",)
    assert catalog.find("customers") is catalog.tables[("public", "customers")]
    assert catalog.find("orders") is None  # sales is not on the search_path
    assert catalog.find("orders", "sales") is catalog.tables[("sales", "orders")]


async def test_catalog_reports_column_types_nullability_defaults_and_comments(db: PostgresDatabase) -> None:
    catalog = await db.catalog(refresh=True)
    customers = catalog.tables[("public", "customers")]
    assert customers.comment == "People who buy things"
    assert [c.name for c in customers.columns] == [
        "id",
        "email",
        "name",
        "score",
        "tags",
        "meta",
        "feeling",
        "created",
    ]
    email = customers.column("email")
    assert email is not None
    assert (email.data_type, email.nullable, email.comment) == ("text", False, "Contact address (PII)")
    types = {c.name: c.data_type for c in customers.columns}
    assert types["name"] == "character varying(80)"
    assert types["score"] == "numeric(10,2)"
    assert types["tags"] == "text[]"
    assert types["meta"] == "jsonb"
    assert types["feeling"] == "mood"
    assert types["created"] == "timestamp with time zone"
    name = customers.column("name")
    assert name is not None and name.nullable
    id_column = customers.column("id")
    assert id_column is not None and id_column.default is not None and "nextval" in id_column.default
    orders = catalog.tables[("sales", "orders")]
    assert orders.column("id").default == "generated always as identity"  # type: ignore[union-attr]
    assert "total * 1.2" in (orders.column("total_with_tax").default or "")  # type: ignore[union-attr]
    assert catalog.tables[("public", "customer_emails")].comment == "Just the addresses"


async def test_catalog_reports_primary_and_foreign_keys(db: PostgresDatabase) -> None:
    catalog = await db.catalog(refresh=True)
    customers = catalog.tables[("public", "customers")]
    assert customers.primary_key == ("id",)
    assert customers.column("id").primary_key  # type: ignore[union-attr]
    assert not customers.column("email").primary_key  # type: ignore[union-attr]

    orders = catalog.tables[("sales", "orders")]
    (fk,) = orders.foreign_keys
    assert (fk.columns, fk.ref_schema, fk.ref_table, fk.ref_columns) == (
        ("customer_id",),
        "public",
        "customers",
        ("id",),
    )
    lines = catalog.tables[("sales", "order_lines")]
    assert lines.primary_key == ("order_id", "line_no")
    (composite,) = catalog.tables[("sales", "line_notes")].foreign_keys
    assert composite.columns == ("order_id", "line_no")
    assert composite.ref_columns == ("order_id", "line_no")
    assert catalog.tables[("public", "customer_emails")].primary_key == ()


async def test_catalog_is_a_cached_snapshot_until_refreshed(db: PostgresDatabase, seeded: Scratch) -> None:
    first = await db.catalog(refresh=True)
    assert await db.catalog() is first
    conn = await asyncpg.connect(seeded.app_dsn)
    try:
        await conn.execute("CREATE TABLE added_later (x int)")
        assert ("public", "added_later") not in (await db.catalog()).tables
        assert ("public", "added_later") in (await db.catalog(refresh=True)).tables
    finally:
        await conn.execute("DROP TABLE added_later")
        await conn.close()


async def test_catalog_of_many_tables_is_read_in_a_few_queries(db: PostgresDatabase, seeded: Scratch) -> None:
    conn = await asyncpg.connect(seeded.app_dsn)
    try:
        await conn.execute("CREATE SCHEMA wide")
        for i in range(60):
            ref = f", parent int REFERENCES wide.t{i - 1} (id)" if i else ""
            columns = ", ".join(f"c{j} text" for j in range(8))
            await conn.execute(f"CREATE TABLE wide.t{i} (id int PRIMARY KEY, {columns}{ref})")
        started = time.perf_counter()
        catalog = await db.catalog(refresh=True)
        elapsed = time.perf_counter() - started
        wide = [t for (schema, _), t in catalog.tables.items() if schema == "wide"]
        assert len(wide) == 60
        assert all(len(t.columns) >= 9 for t in wide)
        assert catalog.tables[("wide", "t7")].foreign_keys[0].ref_table == "t6"
        assert elapsed < 2.0, f"reading the catalog took {elapsed:.2f}s"
    finally:
        await conn.execute("DROP SCHEMA wide CASCADE")
        await conn.close()


# --- reads --------------------------------------------------------------------------------------


async def test_read_returns_rows_as_tuples_with_column_names_and_types(db: PostgresDatabase) -> None:
    result = await db.fetch_read("SELECT id, email, score, tags, meta, created FROM customers ORDER BY id", LIMITS)
    assert [c.name for c in result.columns] == ["id", "email", "score", "tags", "meta", "created"]
    assert [c.type_name for c in result.columns] == [
        "integer",
        "text",
        "numeric",
        "text[]",
        "jsonb",
        "timestamp with time zone",
    ]
    assert result.row_count == 3 == len(result.rows)
    assert all(type(row) is tuple for row in result.rows)
    first = result.rows[0]
    assert first[:2] == (1, "alice@example.com")
    assert str(first[2]) == "10.50"
    assert first[3] == ["vip"]
    assert not result.truncated and result.truncated_by is None
    assert result.affected_rows is None


async def test_rows_beyond_max_rows_are_cut_and_reported(db: PostgresDatabase) -> None:
    result = await db.fetch_read("SELECT g FROM generate_series(1, 50) g", limits(max_rows=10))
    assert result.rows == [(i,) for i in range(1, 11)]
    assert (result.row_count, result.truncated, result.truncated_by) == (10, True, "rows")


async def test_exactly_max_rows_is_not_reported_as_truncated(db: PostgresDatabase) -> None:
    result = await db.fetch_read("SELECT g FROM generate_series(1, 50) g", limits(max_rows=50))
    assert (result.row_count, result.truncated, result.truncated_by) == (50, False, None)


async def test_result_bytes_beyond_the_cap_are_cut_and_reported(db: PostgresDatabase) -> None:
    result = await db.fetch_read(
        "SELECT g, repeat('x', 1000) FROM generate_series(1, 100) g", limits(max_result_bytes=10_000)
    )
    assert result.truncated and result.truncated_by == "bytes"
    assert 5 <= result.row_count < 10
    assert sum(len(row[1]) for row in result.rows) <= 10_000


async def test_a_large_table_is_streamed_not_loaded(db: PostgresDatabase, seeded: Scratch) -> None:
    conn = await asyncpg.connect(seeded.app_dsn)
    try:
        await conn.execute(
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, 300000) g"
        )
        tracemalloc.start()
        try:
            result = await db.fetch_read("SELECT * FROM big", limits(max_rows=100))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert (result.row_count, result.truncated_by) == (100, "rows")
        # the whole table would be tens of megabytes of Python objects
        assert peak < 5_000_000, f"peak {peak} bytes"
    finally:
        await conn.execute("DROP TABLE big")
        await conn.close()


async def test_statement_running_past_the_timeout_is_cancelled_with_a_hint(db: PostgresDatabase) -> None:
    started = time.perf_counter()
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read("SELECT pg_sleep(5)", limits(statement_timeout_ms=200))
    assert time.perf_counter() - started < 2
    assert caught.value.sqlstate == "57014"
    assert "statement timeout of 200 ms" in caught.value.message
    assert "LIMIT" in (caught.value.hint or "")
    # the pool is still serving
    assert (await db.fetch_read("SELECT 1", LIMITS)).rows == [(1,)]


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM ledger",
        "UPDATE ledger SET amount = 0",
        "INSERT INTO ledger VALUES (99, 1)",
        "WITH gone AS (DELETE FROM ledger RETURNING *) SELECT * FROM gone",
        "CREATE TABLE sneaky (x int)",
        "SELECT nextval('customers_id_seq')",
        "SELECT * INTO copied FROM ledger",
    ],
)
async def test_write_inside_read_is_refused_by_the_database(db: PostgresDatabase, sql: str) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read(sql, LIMITS)
    assert caught.value.sqlstate == "25006"
    assert caught.value.message == "the database refused a write in a read-only transaction"
    assert (await db.fetch_read("SELECT count(*) FROM ledger", LIMITS)).rows == [(5,)]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT set_config('transaction_read_only', 'off', true)",
        "DO $$ BEGIN SET TRANSACTION READ WRITE; DELETE FROM ledger; END $$",
        "DO $$ BEGIN COMMIT; DELETE FROM ledger; END $$",
    ],
)
async def test_a_read_cannot_switch_its_transaction_to_read_write(db: PostgresDatabase, sql: str) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read(sql, LIMITS)
    assert caught.value.sqlstate in {"25001", "2D000"}
    assert "transaction" in caught.value.message
    assert (await db.fetch_read("SELECT count(*) FROM ledger", LIMITS)).rows == [(5,)]


@pytest.mark.parametrize("sql", ["SELECT 1; SELECT 2", "SELECT 1; DELETE FROM ledger", "COMMIT; DELETE FROM ledger"])
async def test_multiple_statements_are_refused_by_the_extended_protocol(db: PostgresDatabase, sql: str) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read(sql, LIMITS)
    assert caught.value.sqlstate == "42601"
    assert "multiple commands" in caught.value.message
    assert (await db.fetch_read("SELECT count(*) FROM ledger", LIMITS)).rows == [(5,)]


async def test_a_trailing_semicolon_and_comment_are_one_statement(db: PostgresDatabase) -> None:
    result = await db.fetch_read("SELECT 1 AS one; -- done", LIMITS)
    assert result.rows == [(1,)]


async def test_parameter_placeholders_are_refused_with_a_hint(db: PostgresDatabase) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read("SELECT * FROM customers WHERE id = $1", LIMITS)
    assert caught.value.sqlstate == "42P02"
    assert "inline" in (caught.value.hint or "")


# --- errors never echo values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "sqlstate"),
    [
        ("SELECT email::int FROM customers", "22P02"),
        ("SELECT email::date FROM customers", "22007"),
        ("SELECT (SELECT email FROM customers WHERE id = 1)::numeric", "22P02"),
        ("SELECT meta->>'tier' || email::jsonb::text FROM customers", "22P02"),
        ("SELECT shout(email) FROM customers", "P0001"),
        ("SELECT id / (score - score) FROM customers", "22012"),
        # class 42 raised at run time, with the value used as a name
        ("SELECT current_setting(email) FROM customers", "42704"),
        ("SELECT set_config(email, 'x', true) FROM customers", "42602"),
        ("SELECT email::regtype FROM customers", "42601"),
        ("SELECT query_to_xml(email, true, true, '') FROM customers", "42601"),
        ("SELECT run_sql('SELECT ' || email) FROM customers", "42703"),
        ("SELECT email::regclass FROM customers", "3F000"),
    ],
)
async def test_errors_from_bad_values_do_not_echo_them(db: PostgresDatabase, sql: str, sqlstate: str) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read(sql, LIMITS)
    error = caught.value
    assert error.sqlstate == sqlstate
    text = f"{error.message} {error.hint}"
    assert "alice" not in text and "example.com" not in text
    assert "SQLSTATE" in error.message


async def test_a_duplicate_key_names_the_constraint_but_not_the_value(db: PostgresDatabase) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.execute_write("INSERT INTO customers (email) VALUES ('alice@example.com')", LIMITS)
    error = caught.value
    assert error.sqlstate == "23505"
    assert "customers_email_key" in error.message
    assert "alice" not in str(error)


async def test_a_check_violation_names_the_constraint_but_not_the_value(db: PostgresDatabase) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.execute_write("UPDATE customers SET score = -777 WHERE id = 2", LIMITS)
    assert caught.value.sqlstate == "23514"
    assert "score_is_positive" in caught.value.message
    assert "777" not in str(caught.value)


async def test_undefined_names_pass_the_server_message_through(db: PostgresDatabase) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read("SELECT nope FROM customers", LIMITS)
    assert caught.value.sqlstate == "42703"
    assert caught.value.message == 'column "nope" does not exist'
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read("SELECT * FROM missing_table", LIMITS)
    assert caught.value.sqlstate == "42P01"
    assert "describe" in (caught.value.hint or "")


# --- explain ------------------------------------------------------------------------------------


async def test_explain_returns_the_plan_without_running_the_statement(db: PostgresDatabase) -> None:
    plan = await db.explain("DELETE FROM ledger", LIMITS)
    assert plan[0].startswith("Delete on ledger")
    assert (await db.fetch_read("SELECT count(*) FROM ledger", LIMITS)).rows == [(5,)]
    started = time.perf_counter()
    await db.explain("SELECT pg_sleep(10)", LIMITS)
    assert time.perf_counter() - started < 2


async def test_explain_cannot_be_turned_into_explain_analyze(db: PostgresDatabase) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.explain("ANALYZE DELETE FROM ledger", LIMITS)
    assert caught.value.sqlstate == "42601"
    with pytest.raises(QueryFailed):
        await db.explain("SELECT 1; DELETE FROM ledger", LIMITS)
    assert (await db.fetch_read("SELECT count(*) FROM ledger", LIMITS)).rows == [(5,)]


# --- writes -------------------------------------------------------------------------------------


async def test_write_commits_and_reports_the_affected_rows(db: PostgresDatabase) -> None:
    inserted = await db.execute_write("INSERT INTO ledger VALUES (10, 1), (11, 1)", LIMITS)
    assert (inserted.affected_rows, inserted.rows, inserted.columns) == (2, [], ())
    updated = await db.execute_write("UPDATE ledger SET amount = amount + 1 WHERE id >= 10", LIMITS)
    assert updated.affected_rows == 2
    deleted = await db.execute_write("DELETE FROM ledger WHERE id >= 10", LIMITS)
    assert deleted.affected_rows == 2
    assert (await db.fetch_read("SELECT count(*) FROM ledger", LIMITS)).rows == [(5,)]


async def test_write_returning_rows_is_capped_but_counts_every_row(db: PostgresDatabase) -> None:
    result = await db.execute_write("UPDATE ledger SET amount = amount RETURNING id, amount", limits(max_rows=2))
    assert result.affected_rows == 5
    assert result.row_count == 2 and result.truncated_by == "rows"
    assert [c.name for c in result.columns] == ["id", "amount"]


async def test_a_failed_write_is_rolled_back(db: PostgresDatabase) -> None:
    with pytest.raises(QueryFailed) as caught:
        await db.execute_write("UPDATE ledger SET amount = amount / (id - 3)", LIMITS)
    assert caught.value.sqlstate == "22012"
    assert (await db.fetch_read("SELECT sum(amount) FROM ledger", LIMITS)).rows == [(150,)]


async def test_write_on_a_read_only_database_is_refused(seeded: Scratch) -> None:
    database = PostgresDatabase("main", DatabaseConfig(dsn=seeded.app_dsn))
    await database.open()
    try:
        with pytest.raises(QueryFailed) as caught:
            await database.execute_write("DELETE FROM ledger", LIMITS)
        assert caught.value.sqlstate == "25006"
        assert "read_only" in (caught.value.hint or "")
    finally:
        await database.close()


# --- sessions do not leak between calls ---------------------------------------------------------


async def _backend_pid(database: PostgresDatabase) -> int:
    return (await database.fetch_read("SELECT pg_backend_pid()", LIMITS)).rows[0][0]


async def test_session_settings_do_not_survive_between_calls(single_connection: PostgresDatabase) -> None:
    db = single_connection
    pid = await _backend_pid(db)
    await db.fetch_read("SELECT set_config('bastion.probe', 'leaked', false)", LIMITS)
    await db.execute_write("SELECT set_config('bastion.committed', 'leaked', false)", LIMITS)
    result = await db.fetch_read(
        "SELECT current_setting('bastion.probe', true), current_setting('bastion.committed', true)", LIMITS
    )
    assert all(value in (None, "") for value in result.rows[0])
    timeout = await db.fetch_read("SELECT current_setting('statement_timeout')", LIMITS)
    assert timeout.rows == [("5s",)]
    assert await _backend_pid(db) == pid


async def test_advisory_locks_temp_tables_and_prepared_statements_do_not_survive(
    single_connection: PostgresDatabase,
) -> None:
    db = single_connection
    pid = await _backend_pid(db)
    await db.fetch_read("SELECT pg_advisory_lock(4242)", LIMITS)
    await db.execute_write("CREATE TEMP TABLE leftover AS SELECT 1 AS x", LIMITS)
    await db.execute_write("PREPARE leftover_statement AS SELECT 1", LIMITS)
    result = await db.fetch_read(
        "SELECT (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),"
        " to_regclass('pg_temp.leftover') IS NULL,"
        " (SELECT count(*) FROM pg_prepared_statements)",
        LIMITS,
    )
    assert result.rows == [(0, True, 0)]
    assert await _backend_pid(db) == pid


async def test_set_role_does_not_survive_between_calls(single_connection: PostgresDatabase, seeded: Scratch) -> None:
    db = single_connection
    group = f"bastion_test_group_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(seeded.admin_dsn)
    try:
        await admin.execute(f'CREATE ROLE "{group}" NOLOGIN')
        await admin.execute(f'GRANT "{group}" TO bastion_test_app')
        pid = await _backend_pid(db)
        await db.execute_write(f'SET ROLE "{group}"', LIMITS)
        result = await db.fetch_read("SELECT current_user, pg_backend_pid()", LIMITS)
        assert result.rows == [("bastion_test_app", pid)]
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{group}"')
        await admin.close()


async def test_concurrent_reads_share_the_pool(db: PostgresDatabase) -> None:
    results = await asyncio.gather(*(db.fetch_read(f"SELECT {i}, pg_sleep(0.05)", LIMITS) for i in range(8)))
    assert [r.rows[0][0] for r in results] == list(range(8))


async def test_a_call_waiting_for_a_busy_pool_gives_up_at_its_timeout(
    single_connection: PostgresDatabase,
) -> None:
    db = single_connection
    slow = asyncio.create_task(db.fetch_read("SELECT pg_sleep(1)", LIMITS))
    await asyncio.sleep(0.1)
    with pytest.raises(QueryFailed) as caught:
        await db.fetch_read("SELECT 1", limits(statement_timeout_ms=200))
    assert "busy" in caught.value.message
    await slow


# --- start-up -----------------------------------------------------------------------------------


async def test_superuser_role_is_refused_at_open(seeded: Scratch) -> None:
    database = PostgresDatabase("main", DatabaseConfig(dsn=seeded.admin_dsn))
    with pytest.raises(ConfigError) as caught:
        await database.open()
    assert "superuser" in caught.value.message
    assert "allow_privileged_role" in caught.value.message
    with pytest.raises(ConfigError):  # a refused open stays refused; nothing is half-open
        await database.fetch_read("SELECT 1", LIMITS)


async def test_superuser_role_is_accepted_with_a_warning_when_allowed(
    seeded: Scratch, caplog: pytest.LogCaptureFixture
) -> None:
    database = PostgresDatabase("main", DatabaseConfig(dsn=seeded.admin_dsn, allow_privileged_role=True))
    with caplog.at_level(logging.WARNING, logger="server.db.postgres"):
        await database.open()
    try:
        assert any("superuser" in record.getMessage() for record in caplog.records)
        assert (await database.fetch_read("SELECT 1", LIMITS)).rows == [(1,)]
    finally:
        await database.close()


async def test_ordinary_role_opens_without_warnings(seeded: Scratch, caplog: pytest.LogCaptureFixture) -> None:
    database = PostgresDatabase("main", DatabaseConfig(dsn=seeded.app_dsn))
    with caplog.at_level(logging.WARNING, logger="server.db.postgres"):
        await database.open()
    await database.close()
    assert not caplog.records


async def test_unreachable_database_gives_a_clean_error_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = "postgresql://bastion:s3cret-pw@127.0.0.1:1/app"
    database = PostgresDatabase("main", DatabaseConfig(dsn=dsn))
    with caplog.at_level(logging.WARNING, logger="server.db.postgres"):
        await database.open()  # a database that is down does not stop Bastion serving the others
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "bastion:***@127.0.0.1:1/app" in logged
    assert "s3cret-pw" not in logged
    for call in (database.fetch_read("SELECT 1", LIMITS), database.catalog()):
        with pytest.raises(QueryFailed) as caught:
            await call
        assert caught.value.message == "database main is unreachable"
        assert caught.value.sqlstate == "08001"
        assert "s3cret-pw" not in str(caught.value) and "127.0.0.1" not in str(caught.value)
    await database.close()


async def test_a_database_that_comes_up_later_is_connected_on_the_next_call(seeded: Scratch) -> None:
    parts = urlsplit(seeded.app_dsn)
    down = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:1"))
    database = PostgresDatabase("main", DatabaseConfig(dsn=down))
    await database.open()
    with pytest.raises(QueryFailed):
        await database.fetch_read("SELECT 1", LIMITS)
    database.config = DatabaseConfig(dsn=seeded.app_dsn)  # the server is back
    try:
        assert (await database.fetch_read("SELECT 1", LIMITS)).rows == [(1,)]
    finally:
        await database.close()


async def test_a_missing_database_is_a_config_error_with_the_password_redacted(seeded: Scratch) -> None:
    dsn = seeded.app_dsn.replace("bastion_test_app@", "bastion_test_app:s3cret-pw@").rsplit("/", 1)[0]
    database = PostgresDatabase("main", DatabaseConfig(dsn=f"{dsn}/no_such_database_here"))
    with pytest.raises(ConfigError) as caught:
        await database.open()
    assert "does not exist" in caught.value.message
    assert "s3cret-pw" not in str(caught.value)
    assert "***" in caught.value.message


async def test_the_factory_chooses_postgres_for_postgresql_dsns(seeded: Scratch) -> None:
    database = open_database("main", DatabaseConfig(dsn=seeded.app_dsn), base_dir="/nowhere")
    assert isinstance(database, PostgresDatabase)
    assert database.dialect == "postgres" and database.name == "main"
