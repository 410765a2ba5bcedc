"""PostgreSQL's own parser as a second opinion on every statement the analyzer accepts.

The analyzer decides on sqlglot's reading of the SQL, but the server runs its own. Wherever the two
read a text differently (a tokenizer that ends a string or a comment somewhere else, an escape
understood differently, a grammar rule that builds another tree), what was authorized is not what
runs: a classic parser-differential attack, e.g. `SELECT E'\\'', pg_terminate_backend(1) -- '`
hides a call inside what a naive tokenizer takes for a string. So the text is also read by
PostgreSQL's real scanner and grammar (libpg_query through `pglast`, see `pgview.py`), and the
statement is refused unless both agree on everything a decision depends on:

- the tokens: character by character, the same text is code, a literal (string or quoted name)
  or a comment for both (this closes the whole class of quoting and comment smuggling, whatever
  the hidden text would have done);
- exactly one statement, of the same kind: a SelectStmt without INTO, locking clauses or
  data-modifying statements anywhere (CTEs included) is a read; the write kinds must match;
- the function calls: every call PostgreSQL sees, lower-cased, is one the sqlglot analysis saw,
  and passes the same deny list and, in a read, the same built-in-only rule (calls the grammar
  makes out of syntax, `TRIM(... FROM ...)` -> `pg_catalog.btrim`, need not have been seen: they
  are fixed `pg_catalog` functions, still checked against both lists);
- the relations (schema-qualified where written; CTE names excluded by scope the server's way):
  equal for reads and DML, for DDL every relation PostgreSQL names must be known to the analysis;
- the column names PostgreSQL references are ones the analysis saw, and a plain SELECT has the
  same number of output columns (masking traces output columns, so both must see the same ones).

What is compared is the text as sent, so when the cross-check passes the pipeline can run the
original SQL rather than sqlglot's rendering of it (which mangles valid SQL: `to_hex` -> `HEX`).

Two conditions make "the server reads it as libpg_query does" true, and the database layer must
keep them: `standard_conforming_strings = on` for the session (libpg_query's default and the
server's since 9.1; with it off, backslashes escape in plain strings and `'a\\'` reads differently),
see `REQUIRED_SESSION_SETTINGS`; and a server version whose grammar matches (pglast 8 is
PostgreSQL 18; `pgview.py` covers what changed since 15).

Cost, for a 3-table join on the 2-core machine: 0.14 ms timed alone (scan and parse to JSON in C,
one pass over the JSON, the comparisons); a cold `analyze` goes from 0.20 to 0.38 ms at the
median. It is paid only on a miss of the analyzer's cache.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import pairwise

import sqlglot.expressions as exp
from sqlglot.tokens import Token, TokenType

from server.errors import SQLRejected
from server.sql import pgview
from server.sql.functions import denied_reason
from server.sql.pg_builtins import BUILTIN_FUNCTIONS
from server.sql.statement import StatementKind, TableRef
from server.sql.tree import Facts, Fold

__all__ = ["REFUSAL", "REQUIRED_SESSION_SETTINGS", "verify"]

REFUSAL = "Bastion could not analyze this statement unambiguously"
_HINT = (
    "Bastion reads each statement with two parsers and runs it only when they agree. Write it in "
    "plainer SQL: ordinary quotes and comments, no backslash escapes, one statement."
)
#: session settings under which the server reads SQL text as libpg_query does
REQUIRED_SESSION_SETTINGS: dict[str, str] = {"standard_conforming_strings": "on"}

_SQLGLOT_LITERALS = frozenset(
    {
        TokenType.STRING,
        TokenType.BIT_STRING,
        TokenType.HEX_STRING,
        TokenType.BYTE_STRING,
        TokenType.NATIONAL_STRING,
        TokenType.NATIONAL_RAW_STRING,
        TokenType.RAW_STRING,
        TokenType.HEREDOC_STRING,
        TokenType.UNICODE_STRING,
        TokenType.IDENTIFIER,
    }
)
_BLANK = re.compile(r"[ \t\n\r\f\v]")  # PostgreSQL's whitespace, ASCII only
_WORD = re.compile(r"[^ \t\n\r\f\v]+")
_DML_ROOTS = {
    "InsertStmt": StatementKind.INSERT,
    "UpdateStmt": StatementKind.UPDATE,
    "DeleteStmt": StatementKind.DELETE,
    "MergeStmt": StatementKind.MERGE,
}
_ADMIN_ROOTS = frozenset({"GrantStmt", "GrantRoleStmt", "VacuumStmt"})
_TRANSACTIONS = frozenset({"TRANS_STMT_BEGIN", "TRANS_STMT_START", "TRANS_STMT_COMMIT", "TRANS_STMT_ROLLBACK"})
# statements that are neither reads, writes, DDL nor privileges: never what the analysis accepted
_OTHER_ROOTS = frozenset(
    {
        "ExplainStmt",
        "VariableSetStmt",
        "VariableShowStmt",
        "AlterSystemStmt",
        "CopyStmt",
        "DoStmt",
        "CallStmt",
        "PrepareStmt",
        "ExecuteStmt",
        "DeallocateStmt",
        "DeclareCursorStmt",
        "FetchStmt",
        "ClosePortalStmt",
        "ListenStmt",
        "NotifyStmt",
        "UnlistenStmt",
        "LoadStmt",
        "CheckPointStmt",
        "DiscardStmt",
        "LockStmt",
        "ReindexStmt",
        "ClusterStmt",
        "ConstraintsSetStmt",
        "RefreshMatViewStmt",
        "CreatedbStmt",
        "DropdbStmt",
        "AlterDatabaseStmt",
        "AlterDatabaseSetStmt",
        "AlterDatabaseRefreshCollStmt",
        "CreateRoleStmt",
        "AlterRoleStmt",
        "AlterRoleSetStmt",
        "DropRoleStmt",
        "CreateTableSpaceStmt",
        "DropTableSpaceStmt",
        "AlterTableSpaceOptionsStmt",
        "CreateSubscriptionStmt",
        "AlterSubscriptionStmt",
        "DropSubscriptionStmt",
        "ReassignOwnedStmt",
        "DropOwnedStmt",
    }
)


def _refuse(detail: str) -> SQLRejected:
    return SQLRejected(f"{REFUSAL}: {detail}", hint=_HINT)


def verify(
    sql: str, kind: StatementKind, facts: Facts, tokens: list[Token], root: exp.Expression, fold: Fold
) -> pgview.PgView:
    """Raise SQLRejected unless PostgreSQL's parser reads `sql` as the analysis did.

    `kind`, `facts`, `tokens` and `root` are the analysis of `sql` by sqlglot (statement kind,
    tree walk, tokens after the lexer's U& decoding, and the statement's tree); `fold` normalizes
    an identifier as PostgreSQL does."""
    try:
        view = pgview.read(sql)
        pg_tokens = pgview.tokens(sql)
    except pgview.ParseError as error:
        raise _refuse(f"PostgreSQL's parser rejects it ({_first_line(error)})") from None
    except RecursionError:
        raise _refuse("it is nested too deeply for PostgreSQL's parser") from None
    except Exception as error:  # fail closed: whatever went wrong, nothing runs
        raise _refuse(f"PostgreSQL's parser failed on it ({type(error).__name__})") from None
    if view.statements != 1:
        raise _refuse(f"PostgreSQL's parser finds {view.statements} statements in it")
    offset = _token_disagreement(sql, pg_tokens, tokens)
    if offset is not None:
        raise _refuse(f"PostgreSQL reads the quotes, escapes or comments near character {offset + 1} differently")
    if pg_tokens.ambiguous_numbers:
        raise _refuse(
            f"the number {pg_tokens.ambiguous_numbers[0]} means something else to PostgreSQL 15 "
            "than to later versions; write it in decimal without underscores"
        )
    _check_kind(kind, view)
    _check_calls(kind, facts.call_names | _called_in(tokens), view)
    _check_relations(kind, facts, view)
    if kind is StatementKind.SELECT or kind.is_write:
        _check_columns(facts, view)
    _check_outputs(root, view, fold)
    return view


def _first_line(error: Exception) -> str:
    return (str(error).splitlines() or ["invalid syntax"])[0][:200]


# --- tokens ----------------------------------------------------------------------------------


def _merged(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans joined where they touch, so that `!~~*` as one token or as `!` + `~~*` is the same."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(end, out[-1][1]))
        else:
            out.append((start, end))
    return out


def _code_spans(sql: str, tokens: list[Token]) -> list[tuple[int, int]]:
    """sqlglot's code tokens as spans of non-blank text: it reads `GROUP BY` as one token."""
    spans: list[tuple[int, int]] = []
    blank = _BLANK.search
    for token in tokens:
        if token.token_type in _SQLGLOT_LITERALS:
            continue
        start, end = token.start, token.end
        if blank(sql, start, end + 1) is None:
            spans.append((start, end))
        else:
            spans.extend((word.start(), word.end() - 1) for word in _WORD.finditer(sql, start, end + 1))
    return spans


def _token_disagreement(sql: str, pg_tokens: pgview.PgTokens, tokens: list[Token]) -> int | None:
    """The first character offset where the two tokenizers disagree about what is code, a literal
    or a comment, or None. Code must cover the same characters; each PostgreSQL literal must be
    one sqlglot literal, or several that PostgreSQL joins (`'a'` newline `'b'` is one string to
    the server), with the same outer bounds; and every sqlglot literal must lie in one."""
    code = _code_spans(sql, tokens)
    literals = sorted((t.start, t.end) for t in tokens if t.token_type in _SQLGLOT_LITERALS)
    mine, theirs = list(pg_tokens.code), code
    if mine != theirs:  # the same tokens, most of the time; else the same characters, cut otherwise
        mine, theirs = _merged(mine), _merged(theirs)
    if mine != theirs:
        for a, b in zip(mine, theirs, strict=False):
            if a != b:
                return min(a[0], b[0]) if a[0] != b[0] else min(a[1], b[1])
        return (mine[len(theirs)] if len(mine) > len(theirs) else theirs[len(mine)])[0]
    i = 0
    for start, end in pg_tokens.literals:
        if i >= len(literals) or literals[i][0] != start:
            return start
        while i < len(literals) and literals[i][0] <= end:
            if literals[i][1] > end:
                return end
            i += 1
        if literals[i - 1][1] != end:
            return literals[i - 1][1]
    if i < len(literals):
        return literals[i][0]
    return None


# --- the tree --------------------------------------------------------------------------------


def _pg_kind(view: pgview.PgView) -> StatementKind | None:
    """The statement's kind by PostgreSQL's tree, or None for what no analysis should accept."""
    root = view.root
    if root == "SelectStmt":
        if view.into:
            return StatementKind.DDL
        if len(view.dml) > 1:
            return None
        return next(iter(view.dml)) if view.dml else StatementKind.SELECT
    if root in _DML_ROOTS:
        return _DML_ROOTS[root] if view.dml == {_DML_ROOTS[root]} else None
    if root == "TransactionStmt":
        return StatementKind.TRANSACTION if view.transaction in _TRANSACTIONS else None
    if root in _ADMIN_ROOTS:
        return StatementKind.ADMIN
    if root in _OTHER_ROOTS or not root.endswith("Stmt"):
        return None
    return StatementKind.DDL


def _check_kind(kind: StatementKind, view: pgview.PgView) -> None:
    pg_kind = _pg_kind(view)
    if pg_kind is not kind:
        seen = pg_kind.value.upper() if pg_kind else view.root
        raise _refuse(f"PostgreSQL parses it as {seen}, the analysis as {kind.value.upper()}")
    if kind is StatementKind.SELECT and view.locks:
        raise _refuse("PostgreSQL sees a locking clause (FOR UPDATE/SHARE) the analysis did not")


def _display(call: pgview.PgCall) -> str:
    return f"{call.schema}.{call.name}" if call.schema else call.name


def _called_in(tokens: list[Token]) -> set[str]:
    """Names written as calls, `name(`, in sqlglot's tokens (after U& decoding). sqlglot turns some
    calls into nodes that no longer carry the name (`mod(a, b)` is its `%` operator, `date_part`
    its EXTRACT), so a call it parsed is recognized by its tokens too; the tokens are the same as
    PostgreSQL's once `_token_disagreement` has passed."""
    return {token.text.lower() for token, following in pairwise(tokens) if following.token_type is TokenType.L_PAREN}


def _check_calls(kind: StatementKind, seen: set[str], view: pgview.PgView) -> None:
    """Every call PostgreSQL sees passes the deny list and, in a read, the built-in-only rule; one
    the user wrote must also be one the analysis saw (`seen`: lower-cased names)."""
    for call in view.calls:
        lowered = call.name.lower()
        reason = denied_reason(lowered)
        if reason is not None:
            raise _refuse(f"PostgreSQL sees a call to {_display(call)}, which is never allowed: it {reason}")
        if call.written and lowered not in seen:
            raise _refuse(f"PostgreSQL sees a call to {_display(call)} that the analysis did not")
        builtin = call.schema in (None, "pg_catalog") and call.name in BUILTIN_FUNCTIONS
        if kind is StatementKind.SELECT and not builtin:
            raise _refuse(f"PostgreSQL sees a call to {_display(call)}, which is not a PostgreSQL built-in")
    if kind is StatementKind.SELECT and view.operators:
        raise _refuse(f"PostgreSQL sees the user-defined operator {view.operators[0]}")


def _check_relations(kind: StatementKind, facts: Facts, view: pgview.PgView) -> None:
    analysed: set[TableRef] = set(facts.tables)
    unseen = view.relations - analysed
    if unseen:
        raise _refuse(f"PostgreSQL reads {_names(unseen)}, which the analysis did not see")
    if kind is StatementKind.SELECT or kind.is_write:
        extra = analysed - view.relations
        if extra:
            raise _refuse(f"the analysis sees {_names(extra)}, which PostgreSQL does not read as a table")


def _names(refs: set[TableRef]) -> str:
    return ", ".join(sorted(ref.qualified for ref in refs))


def _check_columns(facts: Facts, view: pgview.PgView) -> None:
    analysed = {column.name for column in facts.columns}
    unseen = view.columns - analysed - {"*"}
    if unseen:
        raise _refuse(f"PostgreSQL references column {sorted(unseen)[0]}, which the analysis did not see")


def _check_outputs(root: exp.Expression, view: pgview.PgView, fold: Fold) -> None:
    """The same output columns, each made of the same columns: lineage, and masking with it,
    follows each output column to its sources."""
    if view.outputs is None:
        return
    node = root
    while isinstance(node, exp.Subquery | exp.SetOperation):
        node = node.this
    if not isinstance(node, exp.Select):
        return
    if len(node.expressions) != len(view.outputs):
        raise _refuse(f"PostgreSQL sees {len(view.outputs)} output columns, the analysis {len(node.expressions)}")
    for position, (item, names) in enumerate(zip(node.expressions, view.outputs, strict=True), start=1):
        unseen = names - _column_names(item, fold)
        if unseen:
            raise _refuse(
                f"PostgreSQL reads column {sorted(unseen)[0]} into output column {position}, the analysis does not"
            )


def _column_names(item: exp.Expression, fold: Fold) -> set[str]:
    """The column names an output column of sqlglot's tree references ("*" for a star)."""
    names: set[str] = set()
    stack: list[exp.Expression] = [item]
    while stack:
        node = stack.pop()
        if isinstance(node, exp.Column):
            names.add("*" if isinstance(node.this, exp.Star) else fold(node.this))
        elif isinstance(node, exp.Star):
            names.add("*")
        else:
            for value in node.args.values():
                if isinstance(value, exp.Expr):
                    stack.append(value)  # type: ignore[arg-type]
                elif isinstance(value, list):
                    stack.extend(v for v in value if isinstance(v, exp.Expr))
    return names
