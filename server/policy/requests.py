"""Which (action, table) requests a statement makes: the write target gets the write action, every
other table it touches is read.

`INSERT INTO a SELECT ... FROM b` is an insert on `a` and a select on `b`; `UPDATE a ... FROM b`
an update on `a` and a select on `b`; a writable CTE (`WITH d AS (DELETE FROM a ...) SELECT ...`)
a delete on `a`. MERGE asks for what its WHEN clauses can do (update, delete, insert) on its
target. DDL and admin statements ask for `ddl`/`admin` on each table they name, or on the database
when they name none. A target that cannot be matched to a resolved table is asked for as a write
of the statement's kind on every table (over-asking can only refuse more, never less).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlglot.expressions as exp

from server.policy.resources import ResolvedTable
from server.sql.analyzer import _fold_postgres, _fold_sqlite
from server.sql.statement import Statement, StatementKind, TableRef

_WRITE_NODES: tuple[tuple[type[exp.Expression], str], ...] = (
    (exp.Insert, "insert"),
    (exp.Update, "update"),
    (exp.Delete, "delete"),
)


def statement_actions(statement: Statement, tables: Sequence[ResolvedTable]) -> tuple[tuple[str, str], ...]:
    """(action, "schema.table") for every table of `statement`, as `AuthorizationRequest.actions`."""
    kind = statement.kind
    names = [table.qualified for table in tables]
    if kind is StatementKind.SELECT:
        return tuple(("select", name) for name in names)
    if kind in (StatementKind.DDL, StatementKind.ADMIN, StatementKind.TRANSACTION):
        action = "ddl" if kind is StatementKind.DDL else "admin"
        return tuple((action, name) for name in names) or ((action, ""),)
    targets = _targets(statement)
    fold = _fold_sqlite if statement.dialect == "sqlite" else _fold_postgres
    pairs: list[tuple[str, str]] = []
    written: set[str] = set()
    for node, actions in targets:
        ref = TableRef(fold(node.this), fold(node.args["db"]) if node.args.get("db") else None)
        match = [t for t in tables if t.ref == ref]
        if not match:  # fail safe: ask for the write on everything
            write = kind.value if kind is not StatementKind.MERGE else "update"
            return tuple((write, name) for name in names) + tuple(("select", name) for name in names)
        for action in actions:
            pairs.append((action, match[0].qualified))
        written.add(match[0].qualified)
    pairs.extend(("select", name) for name in names if name not in written)
    return tuple(dict.fromkeys(pairs))


def _targets(statement: Statement) -> list[tuple[exp.Table, tuple[str, ...]]]:
    found: list[tuple[exp.Table, tuple[str, ...]]] = []
    for node in statement.ast.walk():
        if isinstance(node, exp.Merge):
            target = node.this
            if isinstance(target, exp.Table):
                found.append((target, _merge_actions(node)))
            continue
        for node_type, action in _WRITE_NODES:
            if isinstance(node, node_type) and not isinstance(node.parent, exp.When):
                target = node.this
                if isinstance(target, exp.Schema):
                    target = target.this
                if isinstance(target, exp.Table) and isinstance(target.this, exp.Identifier):
                    found.append((target, (action,)))
    return found


def _merge_actions(node: exp.Merge) -> tuple[str, ...]:
    actions: list[str] = []
    whens = node.args.get("whens")
    for when in whens.expressions if whens is not None else ():
        then = when.args.get("then")
        if isinstance(then, exp.Update):
            actions.append("update")
        elif isinstance(then, exp.Insert):
            actions.append("insert")
        elif isinstance(then, exp.Var) and then.name.lower() == "delete":
            actions.append("delete")
        else:
            actions.extend(("insert", "update", "delete"))  # not understood: ask for everything
    return tuple(dict.fromkeys(actions)) or ("insert", "update", "delete")
