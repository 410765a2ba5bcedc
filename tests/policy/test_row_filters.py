"""Row filters on the real PostgreSQL: the rewritten statement returns exactly the rows of a
hand-written query that filters every reference by hand (joins, outer joins, subqueries, CTEs,
correlated subqueries, LATERAL, UNION, self-joins, qualified and unqualified names)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator

import asyncpg
import pytest

from server.config import DatabaseConfig
from server.db import open_database
from server.db.base import Catalog, ColumnInfo, TableInfo
from server.errors import SQLRejected
from server.sql.analyzer import analyze
from server.sql.row_filters import RowFilterError, apply_row_filters, check_predicate

SCHEMA = """
CREATE SCHEMA sales;
CREATE TABLE sales.customers (id integer PRIMARY KEY, name text, region text);
CREATE TABLE sales.orders (id integer PRIMARY KEY, customer_id integer, amount integer, region text);
CREATE TABLE public.customers (id integer, name text);
CREATE TABLE public.notes (id integer, customer_id integer, body text);
INSERT INTO sales.customers SELECT i, 'c' || i, (ARRAY['EU','US','APAC'])[1 + i % 3] FROM generate_series(1, 30) i;
INSERT INTO sales.orders SELECT i, 1 + i % 30, i * 7 % 100, (ARRAY['EU','US'])[1 + i % 2] FROM generate_series(1, 90) i;
INSERT INTO public.customers SELECT i, 'public ' || i FROM generate_series(1, 5) i;
INSERT INTO public.notes SELECT i, 1 + i % 30, 'note' FROM generate_series(1, 40) i;
"""
FILTERS = {"sales.customers": "region = 'EU'", "sales.orders": "region = 'EU' AND amount > 10"}
EU_C = "(SELECT * FROM sales.customers WHERE region = 'EU')"
EU_O = "(SELECT * FROM sales.orders WHERE region = 'EU' AND amount > 10)"

CASES = [
    ("plain read", "SELECT id, name FROM sales.customers", f"SELECT id, name FROM {EU_C} x"),
    ("star keeps the columns", "SELECT * FROM sales.customers", f"SELECT * FROM {EU_C} x"),
    (
        "join",
        "SELECT c.id, o.id FROM sales.customers c JOIN sales.orders o ON o.customer_id = c.id",
        f"SELECT c.id, o.id FROM {EU_C} c JOIN {EU_O} o ON o.customer_id = c.id",
    ),
    (
        "left join keeps filtered-out orders out of the ON clause, not the customers",
        "SELECT c.id, o.id FROM sales.customers c LEFT JOIN sales.orders o ON o.customer_id = c.id",
        "SELECT c.id, o.id FROM sales.customers c LEFT JOIN sales.orders o ON o.customer_id = c.id "
        "AND o.region = 'EU' AND o.amount > 10 WHERE c.region = 'EU'",
    ),
    (
        "subquery in WHERE",
        "SELECT id FROM public.notes WHERE customer_id IN (SELECT id FROM sales.customers)",
        "SELECT id FROM public.notes WHERE customer_id IN (SELECT id FROM sales.customers WHERE region = 'EU')",
    ),
    (
        "correlated subquery",
        "SELECT c.id, (SELECT count(*) FROM sales.orders o WHERE o.customer_id = c.id) FROM sales.customers c",
        f"SELECT c.id, (SELECT count(*) FROM {EU_O} o WHERE o.customer_id = c.id) FROM {EU_C} c",
    ),
    (
        "EXISTS from an unfiltered table",
        "SELECT n.id FROM public.notes n WHERE EXISTS (SELECT 1 FROM sales.customers c WHERE c.id = n.customer_id)",
        "SELECT n.id FROM public.notes n WHERE EXISTS "
        "(SELECT 1 FROM sales.customers c WHERE c.id = n.customer_id AND c.region = 'EU')",
    ),
    (
        "CTE body",
        "WITH x AS (SELECT id, name FROM sales.customers) SELECT id FROM x",
        "SELECT id FROM sales.customers WHERE region = 'EU'",
    ),
    (
        "a CTE named like the table is not the table, its body reads the table",
        "WITH customers AS (SELECT * FROM sales.customers WHERE id > 3) SELECT id FROM customers",
        "SELECT id FROM sales.customers WHERE id > 3 AND region = 'EU'",
    ),
    (
        "recursive CTE",
        "WITH RECURSIVE r(id) AS (SELECT id FROM sales.customers WHERE id = 1 "
        "UNION ALL SELECT c.id FROM sales.customers c JOIN r ON c.id = r.id + 3) SELECT id FROM r",
        "WITH RECURSIVE r(id) AS (SELECT id FROM sales.customers WHERE id = 1 AND region = 'EU' "
        "UNION ALL SELECT c.id FROM sales.customers c JOIN r ON c.id = r.id + 3 WHERE c.region = 'EU') "
        "SELECT id FROM r",
    ),
    (
        "UNION",
        "SELECT id FROM sales.customers UNION ALL SELECT customer_id FROM sales.orders",
        f"SELECT id FROM {EU_C} a UNION ALL SELECT customer_id FROM {EU_O} b",
    ),
    (
        "self-join with aliases",
        "SELECT a.id, b.id FROM sales.customers a JOIN sales.customers b ON a.region = b.region AND a.id < b.id",
        f"SELECT a.id, b.id FROM {EU_C} a JOIN {EU_C} b ON a.region = b.region AND a.id < b.id",
    ),
    (
        "LATERAL",
        "SELECT c.id, l.n FROM sales.customers c, LATERAL "
        "(SELECT count(*) AS n FROM sales.orders o WHERE o.customer_id = c.id) l",
        f"SELECT c.id, l.n FROM {EU_C} c, LATERAL (SELECT count(*) AS n FROM {EU_O} o WHERE o.customer_id = c.id) l",
    ),
    (
        "schema-qualified column references",
        "SELECT sales.customers.name FROM sales.customers WHERE sales.customers.id < 20",
        "SELECT name FROM sales.customers WHERE id < 20 AND region = 'EU'",
    ),
    (
        "unqualified names through the search path (sales first)",
        "SELECT c.name, count(o.id) FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.name",
        f"SELECT c.name, count(o.id) FROM {EU_C} c JOIN {EU_O} o ON o.customer_id = c.id GROUP BY c.name",
    ),
    (
        "a same-named table of another schema is not filtered",
        "SELECT id, name FROM public.customers",
        "SELECT id, name FROM public.customers",
    ),
    (
        "aggregates, ORDER BY and LIMIT see the filtered rows only",
        "SELECT region, sum(amount) FROM sales.orders GROUP BY region ORDER BY 2 DESC LIMIT 5",
        "SELECT region, sum(amount) FROM sales.orders WHERE region = 'EU' AND amount > 10 GROUP BY region LIMIT 5",
    ),
]


@pytest.fixture(scope="module")
async def shop(scratch_db) -> AsyncIterator[tuple[asyncpg.Connection, Catalog]]:
    admin = await asyncpg.connect(scratch_db.admin_dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{scratch_db.name}" SET search_path = sales, public')
    finally:
        await admin.close()
    conn = await asyncpg.connect(scratch_db.app_dsn)
    await conn.execute(SCHEMA)
    database = open_database("main", DatabaseConfig(dsn=scratch_db.app_dsn), base_dir=".")
    await database.open()
    catalog = await database.catalog()
    await database.close()
    assert catalog.search_path[0] == "sales"
    try:
        yield conn, catalog
    finally:
        await conn.close()


def _rows(records) -> list[tuple]:
    return sorted((tuple(r) for r in records), key=repr)


@pytest.mark.parametrize(("label", "sql", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_rewritten_statement_returns_exactly_the_rows_of_the_hand_filtered_query(shop, label, sql, expected):
    conn, catalog = shop
    statement = analyze(sql, "postgres")
    before = statement.ast.sql(dialect="postgres")
    rewritten = apply_row_filters(statement.ast, FILTERS, dialect="postgres", catalog=catalog).sql(dialect="postgres")
    assert statement.ast.sql(dialect="postgres") == before, "the analyzer's cached tree must not change"
    got = _rows(await conn.fetch(rewritten))
    want = _rows(await conn.fetch(expected))
    assert got == want, rewritten
    unfiltered = _rows(await conn.fetch(sql))
    if label != "a same-named table of another schema is not filtered":
        assert got != unfiltered, "the case must actually exercise the filter"


async def test_the_filter_binds_to_the_table_even_when_an_outer_query_has_the_same_column(shop):
    conn, catalog = shop
    sql = "SELECT n.id FROM public.notes n WHERE n.customer_id IN (SELECT id FROM sales.customers)"
    filters = {"sales.customers": "id < 5"}
    rewritten = apply_row_filters(analyze(sql, "postgres").ast, filters, dialect="postgres", catalog=catalog)
    assert '"_bastion_rows".id < 5' in rewritten.sql(dialect="postgres")
    got = _rows(await conn.fetch(rewritten.sql(dialect="postgres")))
    assert got == _rows(await conn.fetch("SELECT id FROM public.notes WHERE customer_id < 5"))


def test_no_filters_returns_the_tree_itself():
    statement = analyze("SELECT 1", "postgres")
    catalog = Catalog("main", "postgres", {})
    assert apply_row_filters(statement.ast, {}, dialect="postgres", catalog=catalog) is statement.ast


def test_write_targets_are_not_rewritten_but_their_reads_are():
    catalog = Catalog(
        "main",
        "postgres",
        {
            ("public", "t"): TableInfo(
                "public", "t", "table", (ColumnInfo("id", "integer", True), ColumnInfo("r", "text", True))
            )
        },
    )
    sql = "INSERT INTO t SELECT * FROM t"
    out = apply_row_filters(analyze(sql, "postgres").ast, {"public.t": "r = 'x'"}, dialect="postgres", catalog=catalog)
    assert out.sql(dialect="postgres").startswith("INSERT INTO t SELECT * FROM (SELECT * FROM")


def test_a_predicate_that_does_not_parse_refuses_the_statement():
    catalog = Catalog(
        "main", "postgres", {("public", "t"): TableInfo("public", "t", "table", (ColumnInfo("id", "integer", True),))}
    )
    with pytest.raises(SQLRejected, match="cannot be applied"):
        apply_row_filters(
            analyze("SELECT * FROM t", "postgres").ast, {"public.t": "id ="}, dialect="postgres", catalog=catalog
        )


def test_sqlite_statements_are_filtered_too():
    db = sqlite3.connect(":memory:")
    db.executescript(
        "CREATE TABLE customers (id integer, region text);INSERT INTO customers VALUES (1, 'EU'), (2, 'US'), (3, 'EU');"
    )
    catalog = Catalog(
        "demo",
        "sqlite",
        {
            ("main", "customers"): TableInfo(
                "main", "customers", "table", (ColumnInfo("id", "INTEGER", True), ColumnInfo("region", "TEXT", True))
            )
        },
        search_path=("main",),
    )
    sql = "SELECT c.id FROM Customers c WHERE c.id IN (SELECT id FROM main.customers) ORDER BY 1"
    out = apply_row_filters(
        analyze(sql, "sqlite").ast, {"main.customers": "region = 'EU'"}, dialect="sqlite", catalog=catalog
    )
    assert db.execute(out.sql(dialect="sqlite")).fetchall() == [(1,), (3,)]


@pytest.mark.parametrize(
    ("predicate", "message"),
    [
        ("region = 'EU'", None),
        ("(region = 'EU' OR region IS NULL) AND id > 0", None),
        ("lower(region) LIKE 'e%'", None),
        ("regoin = 'EU'", "names column regoin"),
        ("o.region = 'EU'", "only columns of public.t may appear"),
        ("region", "not a condition"),
        ("flag", None),
        ("region = (SELECT 'EU')", "contains a subquery"),
        ("EXISTS (SELECT 1)", "contains a subquery"),
        ("region = $1", "parameter"),
        ("count(*) > 0", "aggregate"),
        ("pg_read_file('x') IS NOT NULL", "never allowed"),
        ("my_func(region) = 1", "not a PostgreSQL built-in"),
        ("region = 'EU'; DROP TABLE t", "not one SQL condition"),
        ("region = 'EU') OR (1 = 1", "not one SQL condition"),
    ],
)
def test_predicates_are_checked_against_the_table_and_the_function_lists(predicate, message):
    table = TableInfo(
        "public",
        "t",
        "table",
        (ColumnInfo("id", "integer", True), ColumnInfo("region", "text", True), ColumnInfo("flag", "boolean", True)),
    )
    if message is None:
        check_predicate(predicate, dialect="postgres", table=table)
    else:
        with pytest.raises(RowFilterError, match=message):
            check_predicate(predicate, dialect="postgres", table=table)


def test_a_filtered_table_where_the_rewrite_cannot_reach_is_refused_not_read_unfiltered():
    catalog = Catalog(
        "main",
        "postgres",
        {
            ("public", "a"): TableInfo("public", "a", "table", (ColumnInfo("id", "integer", True),)),
            ("public", "b"): TableInfo("public", "b", "table", (ColumnInfo("id", "integer", True),)),
        },
    )
    sql = "SELECT * FROM (a JOIN b ON a.id = b.id)"
    with pytest.raises(SQLRejected, match="appears where Bastion cannot apply it"):
        apply_row_filters(analyze(sql, "postgres").ast, {"public.a": "id > 1"}, dialect="postgres", catalog=catalog)
    only_b = apply_row_filters(
        analyze(sql, "postgres").ast, {"public.b": "id > 1"}, dialect="postgres", catalog=catalog
    )
    assert 'JOIN (SELECT * FROM "public"."b"' in only_b.sql(dialect="postgres")
