"""PostgreSQL's own parser as the analyzer's second opinion: smuggling attempts are refused or seen.

A parser-differential attack hides code from the analyzer in what it takes for a string or a
comment, while the server runs it. Each template below puts `{x}` where the server reads code.
Offline, with `{x}` a deny-listed call, every one must be refused. Against the real server, with
`{x}` = `1/0`, PostgreSQL must fail with division_by_zero (so the hidden text really is code to the
server, and the table is not fooling itself), and the analyzer must have seen the division too.
The second table holds texts where `{x}` is hidden from both (a string continuation, a nested
comment): the server must not run it and the analysis must not see it.

The comparator itself is tested with a deliberately naive tokenization and with an analysis of
another text, i.e. with the sqlglot bugs the cross-check exists to catch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
import sqlglot.expressions as exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.tokens import Token, TokenType

from server.errors import SQLRejected
from server.sql import analyzer, crosscheck, lexer, pgview, tree
from server.sql.analyzer import analyze
from server.sql.crosscheck import REFUSAL, REQUIRED_SESSION_SETTINGS
from server.sql.pg_builtins import BUILTIN_FUNCTIONS
from server.sql.statement import StatementKind, TableRef
from tests.conftest import ScratchDatabase

# the server reads `{x}` as code in each of these
SMUGGLED: list[str] = [
    "SELECT E'\\'', {x} -- '",
    "SELECT e'\\\\\\'', {x} -- '",
    "SELECT 'a\\', {x} -- '",
    "SELECT E'\\\\', {x} -- '",
    "SELECT E'\\x27', {x} -- '",
    "SELECT E'\\047', {x} -- '",
    "SELECT E'\\u0027', {x} -- '",
    "SELECT N'\\', {x} -- '",
    "SELECT 'a''', {x} -- '",
    'SELECT 1 AS "a""", {x} -- "',
    "SELECT $a$ $b$ $a$, {x} -- $b$",
    "SELECT $$ ' $$, {x} -- '",
    "SELECT $_$ $__$ $_$, {x} -- $__$",
    "SELECT $q$\\$q$, {x} -- $q$",
    "SELECT U&'\\0027', {x} -- '",
    "SELECT U&'!0027' UESCAPE '!', {x} -- '",
    'SELECT 1 AS U&"\\0022", {x} -- "',
    "SELECT '/*', {x}, '*/'",
    "SELECT '--', {x}",
    "SELECT 1 --- a comment\n, {x}",
    "SELECT 1 -- a comment that \r ends, {x}",
    "SELECT 1 +-- a comment\n {x}",
    "SELECT 1, /* a /* nested */ comment */ {x}",
    "SELECT 1 */* a comment */ {x}",
    "SELECT B'1', X'ff', {x}",
]

# `{x}` is inside a literal or a comment for the server too
HIDDEN: list[str] = [
    "SELECT 'a'\n', {x} -- '",  # a string continued on the next line is one string
    "SELECT /* /* */ {x} */ 1",  # comments nest
    "SELECT 1 -- \f, {x}",  # only \n and \r end a -- comment
    "SELECT 1 -- \v, {x}",
    "SELECT $a$ ', {x}, ' $a$",
    "SELECT E'\\', {x}, \\''",
    "SELECT 'it''s', '{x}'",
    "SELECT $$ -- $$, 2 -- {x}",
    'SELECT 1 AS "-- {x}"',
]

DENIED_CALL = "pg_terminate_backend(1)"


def _refusal(sql: str) -> str:
    with pytest.raises(SQLRejected) as refusal:
        analyze(sql, "postgres")
    return refusal.value.message


@pytest.mark.parametrize("template", SMUGGLED)
def test_a_call_smuggled_past_a_tokenizer_is_refused(template: str) -> None:
    assert "pg_terminate_backend" in _refusal(template.format(x=DENIED_CALL))


@pytest.mark.parametrize("template", HIDDEN)
def test_text_hidden_from_the_server_is_hidden_from_the_analysis_too(template: str) -> None:
    sql = template.format(x=DENIED_CALL)
    statement = analyze(sql, "postgres")
    assert "pg_terminate_backend" not in statement.functions
    assert not [call for call in pgview.read(sql).calls if call.name == "pg_terminate_backend"]


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELECT 0x1F", REFUSAL),  # PostgreSQL 15: `0 AS x1F`; 16+: 31
        ("SELECT 1_000", "means something else to PostgreSQL 15"),
        ("SELECT 123abc", "PostgreSQL's parser rejects it"),
        ("SELECT 1 \x00 FROM orders", "NUL character"),
        ("SELECT pg_sleep(1)\x00", "NUL character"),
        ("SELECT id FROM orders TABLESAMPLE foobar (1)", "foobar, which is not a PostgreSQL built-in"),
        ("ANALYZE orders (id)", "PostgreSQL reads orders, which the analysis did not see"),
        ("CREATE DATABASE other", "PostgreSQL parses it as CreatedbStmt"),
        # sqlglot reads the column as a unit keyword: lineage would lose it (and masking with it)
        ("SELECT date_bin('1 day', now(), created) FROM orders", "PostgreSQL references column created"),
        ("SELECT date_trunc(unit, created) FROM orders", "PostgreSQL references column unit"),
    ],
)
def test_what_postgresql_reads_otherwise_is_refused(sql: str, reason: str) -> None:
    assert reason in _refusal(sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT upper(data->'email'), coalesce(data->'a', data->'b') FROM orders",
        "SELECT mod(7, 3), div(7, 3), date_part('year', now()), to_hex(255)",
        "SELECT trim(both 'x' from note), overlay(note placing 'y' from 1), position('a' in note) FROM orders",
        "SELECT note LIKE 'a!%' ESCAPE '!', note SIMILAR TO 'a%', now() AT TIME ZONE 'utc' FROM orders",
        "SELECT extract(year from now()), substring(note from 1 for 2), normalize(note) FROM orders",
        "SELECT json_object(ARRAY['a'], ARRAY['1']), current_user, current_schema, make_interval(days => 1)",
        "SELECT 'a'\n'b' AS continued, $$dollar$$, E'esc\\'aped', U&'\\0041', B'01', X'0F', N'n'",
        "SELECT x FROM (SELECT 1 AS x UNION (WITH inner_cte AS (SELECT 2) SELECT * FROM inner_cte)) s",
        "SELECT id FROM orders GROUP BY id ORDER BY id",
        "SELECT EXISTS (SELECT * FROM orders), (SELECT count(*) FROM orders o2 WHERE o2.id = o.id) FROM orders o",
        "SELECT date_trunc('day', created), date_bin('1 hour', created, TIMESTAMP '2000-01-01') FROM orders",
        "SELECT 1 # 2, 2 !~~* 'x', ARRAY[1, 2] @> ARRAY[1]",
    ],
)
def test_ordinary_sql_passes_the_cross_check(sql: str) -> None:
    assert analyze(sql, "postgres").kind is StatementKind.SELECT


def test_an_arrow_inside_a_call_is_a_json_operator_not_a_lambda() -> None:
    """sqlglot's shared parser reads `f(data -> 'k')` as a lambda, losing the column `data`."""
    statement = analyze("SELECT upper(data -> 'email') FROM orders", "postgres")
    assert not list(statement.ast.find_all(exp.Lambda))
    assert "data" in {column.name for column in statement.columns}


# --- the comparator, fed the bugs it exists to catch ---------------------------------------------


def _naive_tokens(sql: str, literals: list[tuple[int, int]]) -> list[Token]:
    """Tokens as a tokenizer that puts literals at `literals` would make: the rest, word by word."""
    tokens: list[Token] = []
    i = 0
    for start, end in [*literals, (len(sql), len(sql))]:
        for word in sql[i:start].split():
            at = sql.index(word, i)
            tokens.append(Token(TokenType.VAR, word, 1, at, at, at + len(word) - 1))
            i = at + len(word)
        if start < len(sql):
            tokens.append(Token(TokenType.STRING, sql[start : end + 1], 1, start, start, end))
        i = end + 1
    return tokens


@pytest.mark.parametrize(
    ("sql", "naive_literals"),
    [
        # a tokenizer that knows no E'' escapes ends the string at the escaped quote
        ("SELECT E'\\'', x -- '", [(7, 10), (11, 19)]),
        # one that takes backslashes as escapes in plain strings reads on to the last quote
        ("SELECT 'a\\', x -- '", [(7, 19)]),
        # one that ends a dollar quote at any `$...$`
        ("SELECT $a$ $b$ $a$, x -- $b$", [(7, 13)]),
        # one that does not nest comments
        ("SELECT /* /* */ x */ 1", []),
    ],
)
def test_a_tokenizer_that_reads_quotes_otherwise_is_caught(sql: str, naive_literals: list[tuple[int, int]]) -> None:
    tokens = _naive_tokens(sql, naive_literals)
    if "/*" in sql:  # the naive reading: the comment ends at the first */
        tokens = [t for t in _naive_tokens(sql.replace("/* /* */", "        "), []) if t.text != "SELECT"]
        tokens.insert(0, Token(TokenType.SELECT, "SELECT", 1, 0, 0, 5))
    assert crosscheck._token_disagreement(sql, pgview.tokens(sql), tokens) is not None


def test_the_real_tokens_agree() -> None:
    sql = "SELECT E'\\'', x -- '\n FROM t GROUP BY x ORDER BY 1"
    tokens = lexer.tokenize(sql, Dialect.get_or_raise("postgres"), postgres=True)
    assert crosscheck._token_disagreement(sql, pgview.tokens(sql), tokens) is None


def _analysis(sql: str) -> tuple[tree.Facts, list[Token], exp.Expression]:
    grammar = Dialect.get_or_raise("postgres")
    tokens = lexer.tokenize(sql, grammar, postgres=True)
    root = grammar.parser().parse(tokens, sql)[0]
    assert root is not None
    return tree.inspect(root, sql, analyzer._fold_postgres, BUILTIN_FUNCTIONS), tokens, root


@pytest.mark.parametrize(
    ("sent", "misread_as", "reason"),
    [
        # a grammar that built another tree from the same tokens
        ("SELECT pg_sleep(1)", "SELECT pg_sleep", "pg_sleep, which is never allowed"),
        ("SELECT lower(note) FROM orders", "SELECT lower FROM orders", "column note"),
        ("SELECT id FROM orders, customers", "SELECT id FROM orders", "PostgreSQL reads customers"),
        ("SELECT id FROM orders", "SELECT id FROM orders, customers", "the analysis sees customers"),
        ("SELECT id, email FROM orders", "SELECT id FROM orders", "column email"),
        ("SELECT id, id FROM orders", "SELECT id FROM orders", "2 output columns"),
        ("SELECT id, email FROM orders", "SELECT email, id FROM orders", "column id into output column 1"),
        ("SELECT id FROM orders FOR UPDATE", "SELECT id FROM orders", "locking clause"),
        ("WITH d AS (DELETE FROM orders RETURNING id) SELECT id FROM d", "SELECT id FROM d", "parses it as DELETE"),
        ("SELECT id INTO copy FROM orders", "SELECT id FROM orders", "parses it as DDL"),
        ("SELECT 1; SELECT 2", "SELECT 1", "finds 2 statements"),
        ("SELECT app.f(1)", "SELECT app.f", "app.f, which is not a PostgreSQL built-in"),
    ],
)
def test_an_analysis_of_another_reading_is_refused(sent: str, misread_as: str, reason: str) -> None:
    facts, _, root = _analysis(misread_as)
    tokens = lexer.tokenize(sent, Dialect.get_or_raise("postgres"), postgres=True)
    with pytest.raises(SQLRejected) as refusal:
        crosscheck.verify(sent, StatementKind.SELECT, facts, tokens, root, analyzer._fold_postgres)
    assert refusal.value.message.startswith(REFUSAL)
    assert reason in refusal.value.message


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        ("WITH c AS (SELECT 1) SELECT * FROM c, orders", {TableRef("orders")}),
        ("WITH orders AS (SELECT 1) SELECT * FROM orders, public.orders", {TableRef("orders", "public")}),
        ("SELECT * FROM (WITH s AS (SELECT 1) SELECT * FROM s) x, s", {TableRef("s")}),
        ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", {TableRef("b")}),
        ("WITH RECURSIVE a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", set()),
        ("WITH orders AS (SELECT 1) INSERT INTO orders SELECT * FROM orders", {TableRef("orders")}),
        ("SELECT 1 UNION (WITH u AS (SELECT 2) SELECT * FROM u)", set()),
        ("WITH m AS (SELECT 1) SELECT * INTO m FROM m", {TableRef("m")}),
    ],
)
def test_postgresql_scopes_cte_names_as_the_analysis_does(sql: str, tables: set[TableRef]) -> None:
    assert pgview.read(sql).relations == tables
    assert set(analyze(sql, "postgres").tables) == tables


def test_the_session_must_read_strings_as_libpg_query_does() -> None:
    assert REQUIRED_SESSION_SETTINGS == {"standard_conforming_strings": "on"}


def test_cross_check_cost_is_small() -> None:
    """Not a benchmark, a guard with generous bounds. Measured on the 2-core machine: 0.14 ms for a
    3-table join when called alone; a cold `analyze` goes from 0.20 to 0.38 ms with it."""
    join = (
        "SELECT c.name, count(o.id) AS orders, sum(o.total) AS spent FROM customers c "
        "JOIN orders o ON o.cid = c.id JOIN sales.orders so ON so.id = o.id "
        "WHERE o.total > 10 GROUP BY c.name ORDER BY spent DESC LIMIT 10"
    )
    facts, tokens, root = _analysis(join)
    timings = []
    for _ in range(300):
        started = time.perf_counter()
        crosscheck.verify(join, StatementKind.SELECT, facts, tokens, root, analyzer._fold_postgres)
        timings.append(time.perf_counter() - started)
    median_ms = statistics.median(timings) * 1000
    print(f"cross-check, 3-table join: {median_ms:.3f} ms (median)")
    assert median_ms < 2


# --- the real server ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def conn(scratch_db: ScratchDatabase) -> AsyncIterator[asyncpg.Connection]:
    # no statement cache, as Bastion's pools: a statement prepared under one setting keeps its parse
    connection = await asyncpg.connect(
        scratch_db.admin_dsn, server_settings=REQUIRED_SESSION_SETTINGS, statement_cache_size=0
    )
    await connection.execute("CREATE TABLE orders (id int, note text, data jsonb)")
    yield connection
    await connection.close()


async def _sqlstate(conn: asyncpg.Connection, sql: str) -> str | None:
    try:
        await conn.fetch(sql)
        return None
    except asyncpg.PostgresError as error:
        return error.sqlstate


@pytest.mark.parametrize("template", SMUGGLED)
async def test_postgresql_runs_the_smuggled_text_and_the_analysis_sees_it(
    conn: asyncpg.Connection, template: str
) -> None:
    sql = template.format(x="1/0")
    assert await _sqlstate(conn, sql) == "22012", "the server does not read the hidden text as code"
    assert list(analyze(sql, "postgres").ast.find_all(exp.Div)), "the analysis missed what the server runs"


@pytest.mark.parametrize("template", HIDDEN)
async def test_postgresql_does_not_run_the_hidden_text(conn: asyncpg.Connection, template: str) -> None:
    sql = template.format(x="1/0")
    assert await _sqlstate(conn, sql) is None
    assert not list(analyze(sql, "postgres").ast.find_all(exp.Div))


async def test_without_standard_conforming_strings_the_server_reads_another_statement(
    conn: asyncpg.Connection,
) -> None:
    """Why the database layer must keep REQUIRED_SESSION_SETTINGS: with the setting off, a
    backslash escapes a quote in a plain string, and text both parsers see inside a dollar quote
    becomes code to the server."""
    sql = "SELECT 'a\\' AS x, $$ ' , 1/0 -- $$"
    assert not list(analyze(sql, "postgres").ast.find_all(exp.Div))
    assert await _sqlstate(conn, sql) is None
    async with conn.transaction():
        await conn.execute("SET LOCAL standard_conforming_strings = off")
        assert await _sqlstate(conn, sql) == "22012"
