"""What kind of statement the root of the tree is, from an explicit allow-list.

sqlglot parses far more than Bastion understands: statements it does not know become an opaque
`Command`, and some (SAVEPOINT, CHECKPOINT, DISCARD, START TRANSACTION, ...) come out as a bare
column or alias expression, which is not a statement at all. Only the root types listed here get a
kind; everything else is refused with a reason that says what to do instead, so that nothing
unfamiliar is ever taken for a read. The whole tree is examined afterwards (see `tree.py`): the
root's kind is where classification starts, not where it ends.
"""

from __future__ import annotations

import sqlglot.expressions as exp

from server.errors import SQLRejected
from server.sql.statement import StatementKind

_ROOT_KINDS: tuple[tuple[type[exp.Expression], StatementKind], ...] = (
    (exp.Select, StatementKind.SELECT),
    (exp.SetOperation, StatementKind.SELECT),  # UNION, INTERSECT, EXCEPT
    (exp.Values, StatementKind.SELECT),
    (exp.Insert, StatementKind.INSERT),
    (exp.Update, StatementKind.UPDATE),
    (exp.Delete, StatementKind.DELETE),
    (exp.Merge, StatementKind.MERGE),
    (exp.Create, StatementKind.DDL),
    (exp.Alter, StatementKind.DDL),
    (exp.Drop, StatementKind.DDL),
    (exp.TruncateTable, StatementKind.DDL),
    (exp.Comment, StatementKind.DDL),
    # privileges and statistics change who may do what, or how the planner works, not the schema
    (exp.Grant, StatementKind.ADMIN),
    (exp.Revoke, StatementKind.ADMIN),
    (exp.Analyze, StatementKind.ADMIN),
    (exp.Transaction, StatementKind.TRANSACTION),
    (exp.Commit, StatementKind.TRANSACTION),
    (exp.Rollback, StatementKind.TRANSACTION),
)

_NEXT_STEP_READ = "To read data, send a single SELECT."

# Commands sqlglot does not parse, by their first keyword: (why, what to do instead)
_COMMAND_REASONS: dict[str, tuple[str, str]] = {
    "EXPLAIN": ("EXPLAIN is not supported by query", "Use the explain tool."),
    "SET": ("SET changes session settings, which Bastion manages for each call", _NEXT_STEP_READ),
    "RESET": ("RESET changes session settings, which Bastion manages for each call", _NEXT_STEP_READ),
    "SHOW": ("SHOW is not supported by query", "Read a setting with SELECT current_setting('name')."),
    "DO": ("DO runs procedural code that Bastion cannot inspect", _NEXT_STEP_READ),
    "CALL": ("CALL runs a procedure that Bastion cannot inspect", _NEXT_STEP_READ),
    "COPY": ("COPY moves data to or from files and programs", _NEXT_STEP_READ),
    "PREPARE": ("prepared statements and transactions are not supported", "Send the statement itself."),
    "EXECUTE": ("prepared statements are not supported", "Send the statement itself."),
    "DEALLOCATE": ("prepared statements are not supported", "Send the statement itself."),
    "DECLARE": ("cursors are not supported", "Send a SELECT: Bastion streams rows up to max_rows."),
    "FETCH": ("cursors are not supported", "Send a SELECT: Bastion streams rows up to max_rows."),
    "MOVE": ("cursors are not supported", "Send a SELECT: Bastion streams rows up to max_rows."),
    "CLOSE": ("cursors are not supported", "Send a SELECT: Bastion streams rows up to max_rows."),
    "LISTEN": ("asynchronous notifications are not supported", _NEXT_STEP_READ),
    "NOTIFY": ("asynchronous notifications are not supported", _NEXT_STEP_READ),
    "UNLISTEN": ("asynchronous notifications are not supported", _NEXT_STEP_READ),
    "SAVEPOINT": ("savepoints are not supported: each call runs in a transaction of its own", ""),
    "RELEASE": ("savepoints are not supported: each call runs in a transaction of its own", ""),
    "START": ("transaction control other than BEGIN/COMMIT/ROLLBACK is not supported", ""),
    "ABORT": ("transaction control other than BEGIN/COMMIT/ROLLBACK is not supported", ""),
    "PRAGMA": ("PRAGMA is not supported", "Use the describe tool to learn the schema."),
    "ATTACH": ("ATTACH opens another database file and is never allowed", ""),
    "DETACH": ("DETACH is never allowed", ""),
    "LOAD": ("LOAD loads code into the server and is never allowed", ""),
}
for _word in ("VACUUM", "REINDEX", "CLUSTER", "CHECKPOINT", "REFRESH", "LOCK", "DISCARD"):
    _COMMAND_REASONS[_word] = (f"{_word} is a maintenance command and is not supported by query", "")

# Parsed statements that are understood but never run through query
_REFUSED_ROOTS: tuple[tuple[type[exp.Expression], str], ...] = (
    (exp.Set, "SET"),
    (exp.Copy, "COPY"),
    (exp.Pragma, "PRAGMA"),
    (exp.Attach, "ATTACH"),
    (exp.Detach, "DETACH"),
    (exp.Show, "SHOW"),
    (exp.Declare, "DECLARE"),
)


def _refuse(keyword: str, words: str) -> SQLRejected:
    reason, hint = _COMMAND_REASONS.get(
        keyword,
        (
            f"`{words}` is not a statement Bastion understands",
            "Only SELECT, INSERT, UPDATE, DELETE, MERGE, DDL, GRANT/REVOKE and BEGIN/COMMIT/ROLLBACK are "
            "analyzed; " + _NEXT_STEP_READ,
        ),
    )
    return SQLRejected(reason, hint=hint or None)


def command_refusal(first_words: str) -> SQLRejected | None:
    """The specific refusal for a statement starting with these words, if there is one."""
    keyword = first_words.split(" ", 1)[0].upper() if first_words else ""
    return _refuse(keyword, first_words) if keyword in _COMMAND_REASONS else None


def root_kind(root: exp.Expression, first_words: str) -> StatementKind:
    """The kind of the statement whose tree is `root`, or SQLRejected if its type is not allowed.

    `first_words` are the statement's first keywords as written (comments skipped), used to name
    what was refused when the tree itself says nothing useful (a Command, a bare expression)."""
    while isinstance(root, exp.Subquery) and isinstance(root.this, exp.Query):
        root = root.this  # (SELECT ...) on its own
    if isinstance(root, exp.Rollback) and root.args.get("savepoint"):
        raise _refuse("SAVEPOINT", first_words)  # ROLLBACK TO SAVEPOINT, like SAVEPOINT itself
    for node_type, kind in _ROOT_KINDS:
        if isinstance(root, node_type):
            return kind
    keyword = first_words.split(" ", 1)[0].upper() if first_words else ""
    if isinstance(root, exp.Command):
        keyword = str(root.this).upper()
    for node_type, name in _REFUSED_ROOTS:
        if isinstance(root, node_type):
            keyword = name
    raise _refuse(keyword, first_words or type(root).__name__)
