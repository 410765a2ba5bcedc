"""Driver exceptions translated into `QueryFailed` texts that are safe to show an agent.

A database's own error messages can echo row values: PostgreSQL's `invalid input syntax for type
integer: "alice@x.com"`, a unique violation's `Key (email)=(…)`, a PL/pgSQL `RAISE` with a value in
it, Python's sqlite3 `Could not decode to UTF-8 column 'c' with text '…'`. So a server message is
passed through only where it cannot contain data: PostgreSQL's class 42 (syntax, undefined objects,
privileges), raised while the statement is parsed and analysed, before any row is read; and
SQLite's compile-time messages, recognised by their fixed prefixes. Everything else gets a curated
text chosen by its code, with identifiers (constraint, table, column names) taken from the error's
structured fields, never from its text. DETAIL is never used; DSNs never appear.

SQLite errors are given the PostgreSQL SQLSTATE that means the same thing where one exists, so the
callers can tell a timeout or a refused write apart without knowing the backend.
"""

from __future__ import annotations

import re
import sqlite3

import asyncpg

from server.errors import QueryFailed

_MAX_MESSAGE = 300

TIMEOUT_SQLSTATE = "57014"
READ_ONLY_SQLSTATE = "25006"
UNREACHABLE_SQLSTATE = "08001"


def timeout_error(timeout_ms: int) -> QueryFailed:
    return QueryFailed(
        f"the query took longer than the statement timeout of {timeout_ms} ms",
        hint="Add a WHERE clause or a LIMIT, or ask for fewer rows.",
        sqlstate=TIMEOUT_SQLSTATE,
    )


def read_only_error() -> QueryFailed:
    return QueryFailed(
        "the database refused a write in a read-only transaction",
        hint="Only reads run through query; a write needs a policy that allows it.",
        sqlstate=READ_ONLY_SQLSTATE,
    )


def unreachable_error(database: str, sqlstate: str = UNREACHABLE_SQLSTATE) -> QueryFailed:
    return QueryFailed(
        f"database {database} is unreachable",
        hint="Retry in a moment; if it keeps failing, the operator must check that the database "
        "is running and reachable from Bastion.",
        sqlstate=sqlstate,
    )


def busy_error(database: str) -> QueryFailed:
    return QueryFailed(
        f"every connection to database {database} is busy",
        hint="Retry in a moment, or run fewer queries at once.",
        sqlstate="53300",
    )


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _ident(value: str | None) -> str | None:
    """An identifier from an error's structured field, only if it looks like one."""
    if value and re.fullmatch(r"[\w$ .-]{1,128}", value):
        return value
    return None


# --- PostgreSQL ---------------------------------------------------------------------------------

_HINT_42 = {
    "42601": "Check the SQL syntax for this database's dialect, and send exactly one statement.",
    "42P01": "Call describe to list the tables you can query.",
    "42703": "Call describe with the table name to list its columns.",
    "42883": "Check the function's name and cast its arguments to the expected types.",
    "42501": "The database role Bastion uses lacks this privilege; ask the operator.",
    "42P02": "Statements with $1-style parameters are not supported: write the values inline.",
}

#: class 22 (data exception): what went wrong, without the offending value
_DATA_22 = {
    "22P02": "a value could not be converted to the requested type",
    "22003": "a numeric value is out of range for its type",
    "22012": "division by zero",
    "22001": "a string is too long for its type",
    "22007": "a value is not a valid date or time",
    "22008": "a date or time value is out of range",
    "22023": "a function received an invalid argument value",
    "2201B": "a regular expression is invalid",
    "2201E": "a logarithm received an invalid argument",
    "2201F": "a power function received an invalid argument",
    "2201G": "a width_bucket argument is invalid",
    "2202E": "an array subscript is out of range",
    "22004": "a null value is not allowed here",
    "22005": "a value could not be assigned to its target type",
    "22021": "a character is not valid in the database encoding",
    "22025": "an escape sequence in a LIKE pattern or string is invalid",
    "22P05": "a character has no equivalent in the target encoding",
    "22P03": "a binary value is malformed",
    "2200N": "an XML value is malformed",
    "22030": "a JSON value or path is invalid",
    "22032": "a text value is not valid JSON",
    "22036": "a JSON item is not numeric",
    "22038": "a JSON path returned more than one item where one was required",
    "2203A": "a JSON object has no member with the requested key",
    "2200H": "a sequence generator limit was exceeded",
    "22P06": "a string uses a nonstandard escape",
}

_DATA_HINT = (
    "Some rows hold values the expression cannot handle: filter them out in WHERE, or use a safer "
    "expression (NULLIF, CASE, a pattern check before a cast)."
)


def _integrity(error: asyncpg.PostgresError) -> QueryFailed:
    code = error.sqlstate
    constraint = _ident(getattr(error, "constraint_name", None))
    table = _ident(getattr(error, "table_name", None))
    column = _ident(getattr(error, "column_name", None))
    named = f" ({constraint})" if constraint else ""
    on_table = f" on table {table}" if table else ""
    if code == "23505":
        message = f"the write would duplicate a value in a unique key{named}{on_table}"
    elif code == "23503":
        message = f"the write would break a foreign key{named}{on_table}"
    elif code == "23502":
        target = f"column {column}" if column else "a column"
        message = f"the write would leave {target} null, which it does not allow{on_table}"
    elif code == "23514":
        message = f"the write would break a check constraint{named}{on_table}"
    elif code == "23P01":
        message = f"the write would break an exclusion constraint{named}{on_table}"
    else:
        message = f"the write would break an integrity constraint{named}{on_table}"
    return QueryFailed(
        message,
        hint="Nothing was written. Call describe to see the table's keys and constraints.",
        sqlstate=code,
    )


def _analysis_error(error: asyncpg.PostgresError, code: str, parsing: bool) -> QueryFailed:
    """Class 42 names identifiers, not values, when the parser or analyser raised it against the
    statement's own text (while it was prepared, or with a position in it, and no context). The
    same codes raised at run time can quote a value used as a name (`current_setting(email)`:
    unrecognized configuration parameter "alice@x.com"; `query_to_xml(email, ...)`; dynamic SQL
    in a function), so those get a curated text. Permission errors name existing objects only."""
    at_runtime = getattr(error, "context", None) or getattr(error, "internal_query", None)
    positioned = getattr(error, "position", None) is not None
    hint = _HINT_42.get(code, "Check the statement against describe's output.")
    if not at_runtime and (parsing or positioned or code == "42501"):
        server_hint = getattr(error, "hint", None)
        return QueryFailed(
            _clip(error.message or "the statement is not valid"),
            hint=_clip(server_hint) if server_hint and positioned else hint,
            sqlstate=code,
        )
    return QueryFailed(
        f"the statement failed on a name, function or column it computes at run time (SQLSTATE {code})",
        hint="Names passed as values (to current_setting, ::regclass and the like) must exist and be "
        "literals; call describe to list what exists.",
        sqlstate=code,
    )


def postgres_error(error: BaseException, *, database: str, timeout_ms: int, parsing: bool = False) -> QueryFailed:
    """The agent-safe text for anything asyncpg or the server raised while running a statement;
    `parsing` says it came from preparing the statement, before any row was read."""
    if isinstance(error, TimeoutError):
        return timeout_error(timeout_ms)
    if isinstance(error, (OSError, asyncpg.InterfaceError)) and not isinstance(error, asyncpg.exceptions.DataError):
        return unreachable_error(database)
    if not isinstance(error, asyncpg.PostgresError):
        return QueryFailed(
            f"the database driver failed while running the statement ({type(error).__name__})",
            hint="Retry; if it keeps failing, simplify the statement or tell the operator.",
        )
    code = error.sqlstate or "XX000"
    klass = code[:2]
    if code == TIMEOUT_SQLSTATE:
        return timeout_error(timeout_ms)
    if code == READ_ONLY_SQLSTATE:
        return read_only_error()
    if klass == "42":
        return _analysis_error(error, code, parsing)
    if klass in ("25", "2D"):
        return QueryFailed(
            f"the statement tried to change or end the transaction Bastion runs it in (SQLSTATE {code})",
            hint="Send one plain statement: transaction control, VACUUM and similar commands are not "
            "available through Bastion.",
            sqlstate=code,
        )
    if klass == "22":
        message = _DATA_22.get(code, "a value in the data could not be processed")
        return QueryFailed(f"{message} (SQLSTATE {code})", hint=_DATA_HINT, sqlstate=code)
    if klass == "23":
        return _integrity(error)
    if klass == "08" or code in {"53300", "57P01", "57P02", "57P03"}:
        return unreachable_error(database, code)
    if klass == "53":
        return QueryFailed(
            f"the database ran out of resources running the statement (SQLSTATE {code})",
            hint="Ask for fewer rows, or a simpler statement with fewer joins or sorts.",
            sqlstate=code,
        )
    if klass == "54":
        return QueryFailed(
            f"the statement exceeds a database limit (SQLSTATE {code})",
            hint="Simplify it: fewer columns, less nesting or a shallower recursion.",
            sqlstate=code,
        )
    if klass == "40":
        return QueryFailed(
            f"the database aborted the statement because of concurrent transactions (SQLSTATE {code})",
            hint="Retry it.",
            sqlstate=code,
        )
    if code == "55P03":
        return QueryFailed(
            "the statement waited too long for a lock held by another session",
            hint="Retry later.",
            sqlstate=code,
        )
    if code == "21000":
        return QueryFailed(
            "a subquery used as a value returned more than one row",
            hint="Add LIMIT 1 or an aggregate to the subquery.",
            sqlstate=code,
        )
    if code == "0A000":
        return QueryFailed(
            "the database does not support this construct (SQLSTATE 0A000)",
            hint="Rewrite the statement without it.",
            sqlstate=code,
        )
    return QueryFailed(
        f"the database reported an error (SQLSTATE {code})",
        hint="Check the statement; look the SQLSTATE up in the PostgreSQL documentation.",
        sqlstate=code,
    )


# --- SQLite -------------------------------------------------------------------------------------

#: prefixes of messages SQLite produces while compiling a statement, before any row is read;
#: what follows them is an identifier or a token of the statement itself, never a stored value
_SQLITE_COMPILE = (
    ("no such table:", "42P01"),
    ("no such column:", "42703"),
    ("no such function:", "42883"),
    ("no such module:", "42704"),
    ("ambiguous column name:", "42702"),
    ("wrong number of arguments to function", "42883"),
    ("misuse of aggregate", "42803"),
    ("misuse of window function", "42P20"),
    ("not authorized", "42501"),
    ("access to ", "42501"),
    ("unrecognized token:", "42601"),
    ("incomplete input", "42601"),
    ("near ", "42601"),
    ("syntax error", "42601"),
    ("a GROUP BY clause is required", "42803"),
    ("aggregate functions are not allowed", "42803"),
    ("no tables specified", "42601"),
    ("too many columns", "54011"),
    ("too many terms", "54001"),
    ("sub-select returns", "42601"),
    ("row value misused", "42601"),
    ("ORDER BY term out of range", "42P10"),
    ("GROUP BY term out of range", "42P10"),
    ("1st ORDER BY term", "42P10"),
    ("SELECTs to the left and right of", "42601"),
    ("circular reference:", "42P19"),
    ("recursive reference in a subquery", "42P19"),
    ("multiple references to recursive table", "42P19"),
    ("table ", "42P01"),  # "table x has N columns but M values were supplied", "table x may not be..."
    ("view ", "42809"),  # "view x may not be altered", "view x is circularly defined"
    ("cannot modify ", "42809"),
    ("cannot use window functions", "42P20"),
    ("DISTINCT aggregates must have exactly one argument", "42883"),
    ("RETURNING may not", "42601"),
)

#: run-time messages that may quote a value ("bad JSON path: '<a column's value>'"): the text
#: is replaced, never shown
_SQLITE_RUNTIME = {
    "malformed JSON": ("22032", "a text value is not valid JSON"),
    "bad JSON path": ("22030", "a JSON path is invalid"),
    "JSON cannot hold BLOB values": ("22030", "a blob cannot be stored in JSON"),
    "integer overflow": ("22003", "an integer is out of range"),
}

_SQLITE_CONSTRAINT = {
    "SQLITE_CONSTRAINT_UNIQUE": ("23505", "the write would duplicate a value in a unique key"),
    "SQLITE_CONSTRAINT_PRIMARYKEY": ("23505", "the write would duplicate a primary key"),
    "SQLITE_CONSTRAINT_NOTNULL": ("23502", "the write would leave a column null, which it does not allow"),
    "SQLITE_CONSTRAINT_FOREIGNKEY": ("23503", "the write would break a foreign key"),
    "SQLITE_CONSTRAINT_CHECK": ("23514", "the write would break a check constraint"),
    "SQLITE_CONSTRAINT_DATATYPE": ("22P02", "a value does not fit the column's type (STRICT table)"),
    "SQLITE_CONSTRAINT_TRIGGER": ("23000", "a trigger refused the write"),
}


def _names_only_the_statement(message: str, sql: str) -> bool:
    """Whether every name the message quotes appears in the statement itself. Compile-time
    messages pass; the few run-time ones that share their wording (FTS5 reports a MATCH string's
    column filter as "no such column: <value>") do not."""
    tokens = re.findall(r'"([^"]*)"', message)
    if not tokens:
        _, separator, tail = message.partition(": ")
        if separator:
            tokens = [tail.removesuffix("()")]
    statement = sql.lower()
    return all(token.lower() in statement for token in tokens if token)


def _sqlite_constraint(error: sqlite3.Error, name: str) -> QueryFailed:
    code, message = _SQLITE_CONSTRAINT.get(name, ("23000", "the write would break a constraint"))
    # "UNIQUE constraint failed: t.a, t.b" names columns; a trigger's RAISE text may hold anything
    _, _, tail = str(error).partition(": ")
    if name != "SQLITE_CONSTRAINT_TRIGGER" and re.fullmatch(r"[\w.]+(, [\w.]+)*", tail or "-"):
        message = f"{message} ({tail})"
    return QueryFailed(
        message,
        hint="Nothing was written. Call describe to see the table's keys and constraints.",
        sqlstate=code,
    )


def sqlite_error(
    error: BaseException,
    *,
    database: str,
    timeout_ms: int,
    timed_out: bool = False,
    refused: str | None = None,
    sql: str = "",
) -> QueryFailed:
    """The agent-safe text for a sqlite3 exception. `timed_out` says the progress handler fired;
    `refused` is what the authorizer denied ("write", or a description such as "ATTACH"); `sql`
    is the statement, to check that a passed-through message quotes nothing else."""
    name = getattr(error, "sqlite_errorname", None) or ""
    text = str(error)
    if timed_out or name == "SQLITE_INTERRUPT":
        return timeout_error(timeout_ms)
    if refused is not None or name == "SQLITE_AUTH":
        return read_only_error() if refused == "write" else _sqlite_refused(refused)
    if isinstance(error, sqlite3.ProgrammingError):
        if "one statement" in text:
            return QueryFailed(
                "only one statement can run per call",
                hint="Send the statements one at a time.",
                sqlstate="42601",
            )
        if "closed" in text:
            return unreachable_error(database)
        if "bindings" in text:
            return QueryFailed(
                "the statement has ? parameter placeholders, which Bastion does not bind",
                hint="Write the values inline.",
                sqlstate="42P02",
            )
    if name.startswith("SQLITE_READONLY"):
        return read_only_error()
    if name.startswith("SQLITE_CONSTRAINT"):
        return _sqlite_constraint(error, name)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return QueryFailed(
            f"database {database} is locked by another writer",
            hint="Retry in a moment.",
            sqlstate="55P03",
        )
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_NOTADB", "SQLITE_CORRUPT", "SQLITE_IOERR")):
        return unreachable_error(database, "58030")
    if name == "SQLITE_TOOBIG":
        return QueryFailed(
            "a value or the statement is larger than the database allows",
            hint="Ask for smaller values (substr) or fewer rows.",
            sqlstate="54000",
        )
    if name == "SQLITE_NOMEM":
        return QueryFailed(
            "the database ran out of memory running the statement",
            hint="Ask for fewer rows, or a simpler statement.",
            sqlstate="53200",
        )
    if name in {"SQLITE_ERROR", ""} and isinstance(error, sqlite3.OperationalError):
        for prefix, code in _SQLITE_COMPILE:
            if text.startswith(prefix):
                if code == "42501":
                    return _sqlite_refused(None)
                if not _names_only_the_statement(text, sql):
                    break
                return QueryFailed(_clip(text), hint=_HINT_42.get(code, _HINT_42["42601"]), sqlstate=code)
    for prefix, (code, message) in _SQLITE_RUNTIME.items():
        if text.startswith(prefix):
            return QueryFailed(f"{message} (SQLSTATE {code})", hint=_DATA_HINT, sqlstate=code)
    if "decode" in text and "UTF-8" in text:
        return QueryFailed(
            "a text value in the result is not valid UTF-8",
            hint="Select it as a blob (CAST(col AS BLOB)) or leave the column out.",
            sqlstate="22021",
        )
    label = name or type(error).__name__
    return QueryFailed(
        f"the database reported an error ({label})",
        hint="Check the statement against describe's output; simplify it if it keeps failing.",
    )


def _sqlite_refused(what: str | None) -> QueryFailed:
    return QueryFailed(
        f"the database refused {what or 'the statement'}",
        hint="ATTACH, PRAGMA, transaction control, extension loading and (in a read) writes are "
        "refused by the database itself; send one plain SELECT.",
        sqlstate="42501",
    )
