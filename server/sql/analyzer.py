"""The analyze stage: SQL text -> `Statement`, failing closed.

Every later stage decides on what this stage understood, so it only says "this is a read" when it
can show it: exactly one statement; a root type from an explicit allow-list (`kinds.py`); no write
anywhere in the tree (writable CTEs, SELECT ... INTO, row locks); no deny-listed function anywhere
(`functions.py`); on PostgreSQL, no call in a read to anything but a built-in function
(`pg_builtins.py`), since user code can write or read what policy never sees. Everything else is
refused with `SQLRejected`, whose message says what was refused and whose hint says what to do
next. Nothing here touches a database.

On PostgreSQL, every statement sqlglot's analysis accepts is also read by PostgreSQL's own scanner
and grammar (libpg_query, through pglast; `crosscheck.py`), and refused unless both agree on the
tokens, the statement count and kind, the calls, the relations and the columns: a text the two
parsers read differently is how an attack smuggles what analysis never saw. With that, the
pipeline can run the text as sent rather than sqlglot's rendering of it.

The analyzer is the first lock, not the last: a user-defined function, a view or a rule can write
behind a name that looks harmless, so reads also run in a READ ONLY transaction (SQLite: a
read-only connection with an authorizer), which the database itself enforces.

Speed: parsing is on every call's path. sqlglot's compiled build (the `sqlglotc` wheel overlays
mypyc-compiled modules onto the `sqlglot` package; `COMPILED` says whether they were loaded)
tokenizes and parses a 3-table join with aggregates in about 0.08 ms on the 2-core machine. A cold
`analyze` of it (parse, tree walk, checks) takes 0.20 ms at the median without the PostgreSQL
cross-check and 0.38 ms with it (the cross-check alone, timed in isolation: 0.14 ms); a repeat of
the same text, served by the LRU cache below, 0.5 µs.
Guarded, with generous bounds, by tests/sql/test_analyzer.py::test_analyze_is_fast_cold_and_cached.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import NamedTuple

import sqlglot.expressions as exp
from sqlglot.dialects.dialect import Dialect
from sqlglot.errors import ParseError, TokenError
from sqlglot.parser import Parser
from sqlglot.tokens import SQLGLOTC_INSTALLED, Token, TokenType

from server.errors import SQLRejected
from server.sql import crosscheck, lexer, tree
from server.sql.kinds import command_refusal, root_kind
from server.sql.pg_builtins import BUILTIN_FUNCTIONS
from server.sql.statement import Statement, StatementKind

__all__ = ["COMPILED", "DIALECTS", "MAX_SQL_LENGTH", "analyze", "cache_clear", "cache_info"]

#: longer SQL is refused before it is parsed: no agent needs it, and parsing it costs time
MAX_SQL_LENGTH = 100_000
#: whether sqlglot runs its compiled (sqlglotc) modules
COMPILED: bool = SQLGLOTC_INSTALLED
DIALECTS: tuple[str, ...] = ("postgres", "sqlite")

_CACHE_SIZE = 1024
_DIALECTS = {name: Dialect.get_or_raise(name) for name in DIALECTS}
_POSTGRES_NAME_BYTES = 63  # NAMEDATALEN - 1: PostgreSQL truncates longer identifiers
# sqlglot knows hundreds of functions of other databases (`max_by`, `iif`, `glob`, `uuid`, ...). In
# PostgreSQL such a call can only be a user-defined function, but sqlglot may turn it into a node of
# its own (a cast, an operator, a known function) that no longer says what was written. So these
# names are looked for in the token stream. Keywords that precede a parenthesis are left out.
_POSTGRES_PARSER = _DIALECTS["postgres"].parser_class
_FOREIGN_FUNCTIONS = frozenset(
    name.lower()
    for name in (
        *_POSTGRES_PARSER.FUNCTIONS,
        *_POSTGRES_PARSER.FUNCTION_PARSERS,
        *_POSTGRES_PARSER.NO_PAREN_FUNCTION_PARSERS,
    )
    if isinstance(name, str) and name.lower() not in BUILTIN_FUNCTIONS
) - {"and", "or", "any", "case", "variadic", "filter", "columns"}
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class _CommandFallbackFilter(logging.Filter):
    """sqlglot logs a warning whenever it parses a statement as an opaque Command. The analyzer
    refuses those with its own reason, so the warning is only noise in the server's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Falling back to parsing as a 'Command'" not in record.getMessage()


logging.getLogger("sqlglot").addFilter(_CommandFallbackFilter())

# PostgreSQL and SQLite have no lambdas, but sqlglot's shared parser reads `upper(data -> 'k')` (a
# JSON operator in both) as the lambda `data -> 'k'`, in which `data` is no column at all: lineage,
# and masking with it, would lose it. Bastion parses no dialect with `->` lambdas, so the arrow is
# taken out of the parser's lambda table, which is one dict for every dialect in the process.
# `=>` stays: sqlglot reads it as named-argument notation, `make_interval(days => 1)`, as
# PostgreSQL does. A Lambda node found anyway is refused (`tree.Facts.unsupported`).
Parser.LAMBDAS.pop(TokenType.ARROW, None)


class _Refusal(NamedTuple):
    """A cached refusal. The exception is rebuilt for every raise: re-raising one cached instance
    would grow its traceback each time."""

    message: str
    hint: str | None


def analyze(sql: str, dialect: str) -> Statement:
    """Analyze one SQL statement in `dialect` ("postgres" or "sqlite"), or raise SQLRejected.

    Results are memoized by (sql, dialect) in an LRU cache of 1024 entries, so the same text costs
    a dictionary lookup. The returned Statement is frozen, but its `ast` is a mutable sqlglot tree
    shared by every caller that sent the same text: a later stage that rewrites it (row filters,
    limits) must work on `statement.ast.copy()`, never on the tree itself.
    """
    if dialect not in _DIALECTS:
        raise SQLRejected(f"unknown SQL dialect {dialect!r}", hint=f"Use one of: {', '.join(DIALECTS)}.")
    if not isinstance(sql, str):
        raise SQLRejected("the SQL must be text")
    if len(sql) > MAX_SQL_LENGTH:
        raise SQLRejected(
            f"the SQL is {len(sql):,} characters long; at most {MAX_SQL_LENGTH:,} are accepted",
            hint="Send one shorter statement.",
        )
    result = _analyze_cached(sql, dialect)
    if isinstance(result, _Refusal):
        raise SQLRejected(result.message, hint=result.hint)
    return result


def cache_info() -> object:
    return _analyze_cached.cache_info()


def cache_clear() -> None:
    _analyze_cached.cache_clear()


@lru_cache(maxsize=_CACHE_SIZE)
def _analyze_cached(sql: str, dialect: str) -> Statement | _Refusal:
    try:
        return _analyze(sql, dialect)
    except SQLRejected as refusal:
        return _Refusal(refusal.message, refusal.hint)


def _fold_postgres(node: exp.Expression | str) -> str:
    """An identifier as PostgreSQL stores it: unquoted names folded to lower case (ASCII only, as
    the server does), quoted names kept, both truncated to 63 bytes."""
    if isinstance(node, exp.Identifier):
        name = node.this if node.quoted else node.this.translate(_ASCII_LOWER)
    else:
        name = (node.name if isinstance(node, exp.Expression) else str(node)).translate(_ASCII_LOWER)
    encoded = name.encode("utf-8")
    if len(encoded) > _POSTGRES_NAME_BYTES:
        name = encoded[:_POSTGRES_NAME_BYTES].decode("utf-8", errors="ignore")
    return name


def _fold_sqlite(node: exp.Expression | str) -> str:
    """SQLite compares identifiers case-insensitively (ASCII), quoted or not."""
    if isinstance(node, exp.Identifier):
        return node.this.translate(_ASCII_LOWER)
    return (node.name if isinstance(node, exp.Expression) else str(node)).translate(_ASCII_LOWER)


def _parse(sql: str, dialect: str) -> tuple[list[exp.Expression], list[Token]]:
    """The statements in `sql` and its tokens, or SQLRejected."""
    grammar = _DIALECTS[dialect]
    try:
        tokens = lexer.tokenize(sql, grammar, postgres=dialect == "postgres")
    except TokenError:
        raise SQLRejected(
            "the SQL could not be parsed: an unterminated string, quoted identifier or comment",
            hint="Check the quotes and comments.",
        ) from None
    first_words = lexer.first_words(tokens)
    try:
        trees = grammar.parser().parse(tokens, sql)
    except ParseError as error:
        # a statement Bastion refuses anyway gets its own reason, not sqlglot's syntax complaint
        known = command_refusal(first_words)
        if known is not None:
            raise known from None
        detail = error.errors[0] if error.errors else {}
        where = f" at line {detail.get('line')}, column {detail.get('col')}" if detail.get("line") else ""
        description = detail.get("description") or "invalid syntax"
        raise SQLRejected(
            f"the SQL could not be parsed: {description}{where}",
            hint=f"Bastion accepts one statement in the {dialect} dialect; check the syntax.",
        ) from None
    except RecursionError:
        raise SQLRejected("the SQL is nested too deeply to analyze", hint="Simplify the statement.") from None
    except Exception as error:  # fail closed on any parser failure: never guess
        raise SQLRejected(
            f"the SQL could not be parsed ({type(error).__name__})", hint="Simplify the statement."
        ) from None
    # sqlglot keeps a comment after the last `;` as a Semicolon node: it is not a statement
    statements = [node for node in trees if node is not None and not isinstance(node, exp.Semicolon)]
    return statements, tokens


def _analyze(sql: str, dialect: str) -> Statement:
    if not sql.strip():
        raise SQLRejected("the SQL is empty", hint="Send one SQL statement.")
    if "\x00" in sql:  # the server's protocol and libpg_query read C strings: they would stop there
        raise SQLRejected("the SQL contains a NUL character", hint="Remove it; no SQL needs one.")
    statements, tokens = _parse(sql, dialect)
    if not statements:
        raise SQLRejected("the SQL contains no statement, only comments", hint="Send one SQL statement.")
    if len(statements) > 1:
        raise SQLRejected(
            f"only one statement per call is allowed: found {len(statements)}",
            hint="Send each statement in a call of its own.",
        )
    root = statements[0]
    kind = root_kind(root, lexer.first_words(tokens))
    if dialect == "postgres":
        facts = tree.inspect(root, sql, _fold_postgres, BUILTIN_FUNCTIONS)
        for name in lexer.calls_named(tokens, _FOREIGN_FUNCTIONS):
            facts.user_functions.setdefault(name.lower(), None)
    else:  # SQLite cannot define functions in SQL: only the host application and extensions can
        facts = tree.inspect(root, sql, _fold_sqlite)
    kind = _effective_kind(kind, facts)
    operators: tuple[str, ...] = ()
    if dialect == "postgres":
        view = crosscheck.verify(sql, kind, facts, tokens, root, _fold_postgres)
        operators = tuple(sorted(view.operator_symbols))
    return Statement(
        sql=sql,
        dialect=dialect,
        kind=kind,
        tables=tuple(facts.tables),
        columns=tuple(facts.columns),
        functions=tuple(facts.functions),
        ast=root,
        operators=operators,
    )


def _effective_kind(kind: StatementKind, facts: tree.Facts) -> StatementKind:
    """The root's kind, corrected by what the walk found below it, or SQLRejected."""
    if facts.denied:
        name, reason = next(iter(facts.denied.items()))
        others = [other for other in facts.denied if other != name]
        also = f" (also refused: {', '.join(others)})" if others else ""
        raise SQLRejected(
            f"function {name} is never allowed: it {reason}{also}",
            hint="Bastion refuses it whatever the policy; rewrite the statement without it.",
        )
    if facts.placeholders:
        raise SQLRejected(
            "bind parameters and placeholders ($1, ?, :name, @name) are not supported: the statement is run as sent",
            hint="Write the values into the statement. In PostgreSQL, @x is an absolute value: write abs(x).",
        )
    if facts.unsupported:
        raise SQLRejected(
            f"the statement contains {facts.unsupported[0]}, which Bastion cannot analyze",
            hint="Simplify the statement.",
        )
    if "COMMAND" in facts.nested_statements:
        raise SQLRejected("the statement contains a part Bastion cannot parse", hint="Simplify the statement.")
    if kind not in (StatementKind.SELECT, *(k for k in StatementKind if k.is_write)):
        return kind  # DDL, admin and transaction control are never reads, whatever they contain
    if facts.nested_statements:
        raise SQLRejected(
            f"a {facts.nested_statements[0]} statement nested inside another is not supported",
            hint="Send each statement in a call of its own.",
        )
    writes = {k: why for k, why in facts.writes.items() if k is not kind}
    if kind is StatementKind.SELECT:
        if len(writes) > 1:
            raise _mixed(writes)
        if writes:
            return next(iter(writes))
        if facts.user_functions:
            names = list(facts.user_functions)
            what = f"function {names[0]} is" if len(names) == 1 else f"functions {', '.join(names)} are"
            raise SQLRejected(
                f"{what} not a PostgreSQL built-in: Bastion cannot see what it reads or writes, so a "
                "read may not call it",
                hint="Query the tables it reads directly.",
            )
        if facts.locks:
            raise SQLRejected(
                f"SELECT ... {facts.locks[0]} locks rows and is not a plain read",
                hint="Each call runs in a transaction of its own, so the lock would end with it: "
                "drop the locking clause to read, or send an UPDATE to change rows.",
            )
        return kind
    if writes:
        raise _mixed({kind: f"the {kind.value.upper()} itself", **writes})
    return kind


def _mixed(writes: dict[StatementKind, str]) -> SQLRejected:
    kinds = " and ".join(k.value.upper() for k in writes)
    return SQLRejected(
        f"the statement changes data in more than one way ({kinds}), which one decision cannot cover",
        hint="Send each change as a statement of its own.",
    )
