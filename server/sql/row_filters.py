"""Row filters: make every reference to a filtered table see only the rows a policy allows.

A policy's `@row_filter("region = 'EU'")` on a permit of `select` is an obligation: whatever the
agent wrote, the statement must not read a row of that table outside the predicate. Adding the
predicate to a WHERE clause is not enough (outer joins, subqueries, CTE bodies, correlated
subqueries, UNION branches, LATERAL, self-joins each have their own scope), so instead each
reference to the table in a read position is replaced by a derived table that is already filtered:

    FROM sales.customers AS c   ->   FROM (SELECT * FROM "sales"."customers" AS "_bastion_rows"
                                           WHERE "_bastion_rows"."region" = 'EU') AS c

The derived table has the same columns in the same order under the same name (the alias, or the
table's name when it had none), so the rest of the statement means what it meant, over fewer rows.
The predicate's columns are qualified with the inner alias, so a column the table lacks (dropped
after the policy was checked) is an error in the database, never a silent match with a column of
an outer query.

Which names are tables follows the analyzer exactly (the same identifier folding, the same CTE
visibility), so what gets filtered is exactly what policy authorized. A filtered table in a
position this rewrite does not handle is refused (fail closed); write targets (INSERT INTO,
UPDATE, DELETE FROM, MERGE INTO) are not reads and are left alone.

Predicates are checked when policies are bound to a catalog (`check_predicate`): one boolean
expression in the database's dialect, only columns of that table, no subquery, no parameter, no
function on the deny list (`functions.py`) and, on PostgreSQL, only built-in functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache

import sqlglot
import sqlglot.expressions as exp
from sqlglot.errors import SqlglotError

from server.db.base import Catalog, TableInfo
from server.errors import SQLRejected

# The analyzer's identifier folding, reused on purpose: the rewrite must resolve names exactly as
# the analysis that policy decided on did, or a reference could escape its filter.
from server.sql.analyzer import _fold_postgres, _fold_sqlite
from server.sql.functions import denied_reason
from server.sql.pg_builtins import BUILTIN_FUNCTIONS

__all__ = ["INNER_ALIAS", "RowFilterError", "apply_row_filters", "check_predicate", "parse_predicate"]

#: the alias of the table inside each filtered derived table
INNER_ALIAS = "_bastion_rows"
_FOLDS = {"postgres": _fold_postgres, "sqlite": _fold_sqlite}
_DML = (exp.Insert, exp.Update, exp.Delete, exp.Merge)
_Fold = Callable[[exp.Expression | str], str]
_BOOLEAN = (exp.Predicate, exp.Connector, exp.Not, exp.Boolean, exp.Exists)


class RowFilterError(ValueError):
    """A row filter predicate that cannot be used; the message says why, for the policy author."""


@lru_cache(maxsize=512)
def parse_predicate(predicate: str, dialect: str) -> exp.Expression:
    """The predicate parsed in `dialect` and checked for shape (not yet against a table), or
    RowFilterError. Cached: callers copy before changing it."""
    if dialect not in _FOLDS:
        raise RowFilterError(f"unknown SQL dialect {dialect!r}")
    if not predicate.strip():
        raise RowFilterError("the row filter is empty")
    try:
        node = sqlglot.parse_one(predicate, read=dialect, into=exp.Condition)
    except (SqlglotError, RecursionError, ValueError):
        raise RowFilterError(
            f"the row filter {predicate!r} is not one SQL condition in the {dialect} dialect"
        ) from None
    inner = node
    while isinstance(inner, exp.Paren):
        inner = inner.this
    if not isinstance(inner, (*_BOOLEAN, exp.Column)):
        raise RowFilterError(f"the row filter {predicate!r} is not a boolean condition")
    for sub in node.walk():
        if isinstance(sub, (exp.Query, exp.Subquery, exp.Exists)):
            raise RowFilterError(f"the row filter {predicate!r} contains a subquery, which is not allowed")
        if isinstance(sub, (exp.Parameter, exp.Placeholder)):
            raise RowFilterError(f"the row filter {predicate!r} contains a parameter, which is not allowed")
        if isinstance(sub, (exp.AggFunc, exp.Window)):
            raise RowFilterError(f"the row filter {predicate!r} uses an aggregate or window function")
        if isinstance(sub, exp.Star):
            raise RowFilterError(f"the row filter {predicate!r} contains `*`")
        if isinstance(sub, exp.Func):
            name = (sub.name if isinstance(sub, exp.Anonymous) else sub.sql_name()).lower()
            reason = denied_reason(name)
            if reason is not None:
                raise RowFilterError(f"the row filter {predicate!r} calls {name}, which is never allowed: it {reason}")
            if dialect == "postgres" and isinstance(sub, exp.Anonymous) and name not in BUILTIN_FUNCTIONS:
                raise RowFilterError(f"the row filter {predicate!r} calls {name}, which is not a PostgreSQL built-in")
    return node


def check_predicate(predicate: str, *, dialect: str, table: TableInfo) -> exp.Expression:
    """`parse_predicate`, plus: every column is one of `table`'s (unqualified, or qualified with
    the table's own name). Returns the parsed predicate; raises RowFilterError."""
    node = parse_predicate(predicate, dialect)
    fold = _FOLDS[dialect]
    known = {_column_key(column.name, dialect) for column in table.columns}
    own_names = {_column_key(table.name, dialect)}
    for column in node.find_all(exp.Column):
        qualifier = column.args.get("table")
        if column.args.get("db") or (qualifier is not None and fold(qualifier) not in own_names):
            raise RowFilterError(
                f"the row filter {predicate!r} names {column.sql(dialect=dialect)}: only columns of "
                f"{table.qualified} may appear, unqualified"
            )
        if _column_key(fold(column.this), dialect) not in known:
            raise RowFilterError(
                f"the row filter {predicate!r} names column {column.name}, which {table.qualified} lacks"
            )
    bare = node
    while isinstance(bare, exp.Paren):
        bare = bare.this
    if isinstance(bare, exp.Column):
        info = next(c for c in table.columns if _column_key(c.name, dialect) == _column_key(fold(bare.this), dialect))
        if info.data_type.lower() not in ("boolean", "bool"):
            raise RowFilterError(
                f"the row filter {predicate!r} is column {info.name} of type {info.data_type}, not a condition"
            )
    return node


def _column_key(name: str, dialect: str) -> str:
    return name.lower() if dialect == "sqlite" else name


def apply_row_filters(
    ast: exp.Expression, filters: Mapping[str, str], *, dialect: str, catalog: Catalog
) -> exp.Expression:
    """A copy of `ast` in which every read of a table named in `filters` ("schema.table" ->
    predicate) sees only the rows matching its predicate. `ast` itself is never changed (the
    analyzer caches and shares it); with no filters it is returned as is.

    Raises SQLRejected when a filtered table appears where it cannot be filtered, or a predicate
    does not parse (both are refusals, never a run without the filter)."""
    if not filters:
        return ast
    if dialect not in _FOLDS:
        raise SQLRejected(f"unknown SQL dialect {dialect!r}")
    fold = _FOLDS[dialect]
    predicates: dict[str, exp.Expression] = {}
    for qualified, predicate in filters.items():
        try:
            predicates[qualified] = parse_predicate(predicate, dialect)
        except RowFilterError as error:
            raise SQLRejected(f"a row filter for {qualified} cannot be applied: {error}") from None
    tree = ast.copy()
    found = _filtered_references(tree, predicates, fold, catalog)
    for node, info in found:
        node.replace(_filtered_table(node, info, predicates[info.qualified]))
    if found:
        _unqualify_columns(tree, predicates, fold, catalog)
    return tree


def _filtered_references(
    tree: exp.Expression, predicates: Mapping[str, exp.Expression], fold: _Fold, catalog: Catalog
) -> list[tuple[exp.Table, TableInfo]]:
    """Every table node to wrap, found with the analyzer's scoping: a WITH clause's names are
    visible in its query and in later siblings (all siblings when RECURSIVE), never as a write
    target, never when schema-qualified."""
    found: list[tuple[exp.Table, TableInfo]] = []
    stack: list[tuple[exp.Expression, frozenset[str], bool]] = [(tree, frozenset(), False)]
    while stack:
        node, ctes, target = stack.pop()
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
            info = _resolve(node, ctes, target, fold, catalog)
            if info is not None and info.qualified in predicates:
                if _read_position(node):
                    found.append((node, info))
                elif not target:
                    raise SQLRejected(
                        f"table {info.qualified} has a row filter, and appears where Bastion cannot apply it",
                        hint="Name it in a FROM or JOIN clause, without parentheses around joins.",
                    )
            for key, value in node.args.items():
                if key not in ("this", "db", "catalog", "alias"):
                    stack.extend((child, ctes, False) for child in _children(value))
            continue
        with_ = node.args.get("with_")
        if isinstance(with_, exp.With):
            names = [fold(cte.args["alias"].this) for cte in with_.expressions if cte.args.get("alias")]
            recursive = bool(with_.args.get("recursive"))
            for i, cte in enumerate(with_.expressions):
                stack.append((cte, ctes | frozenset(names if recursive else names[:i]), False))
            ctes = ctes | frozenset(names)
        writes_into = isinstance(node, (*_DML, exp.Into)) or (target and isinstance(node, exp.Schema))
        for key, value in node.args.items():
            if key != "with_":
                stack.extend((child, ctes, writes_into and key == "this") for child in _children(value))
    return found


def _resolve(node: exp.Table, ctes: frozenset[str], target: bool, fold: _Fold, catalog: Catalog) -> TableInfo | None:
    name = fold(node.this)
    db = node.args.get("db")
    schema = fold(db) if db else None
    if schema is None and not target and name in ctes:
        return None
    return catalog.find(name, schema)


def _read_position(node: exp.Table) -> bool:
    if any(node.args.get(key) for key in ("joins", "laterals", "pivots")):
        return False  # `(a JOIN b)` hangs the join on the table: wrapping it would move the join
    parent, key = node.parent, node.arg_key
    if isinstance(parent, (exp.From, exp.Join)) and key == "this":
        return True
    return isinstance(parent, (exp.Delete, exp.Merge)) and key == "using"


def _children(value: object) -> list[exp.Expression]:
    # `Expr` as in the analyzer's walk: the base of every node, mixins included
    if isinstance(value, exp.Expr):
        return [value]  # type: ignore[list-item]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, exp.Expr)]
    return []


def _filtered_table(node: exp.Table, info: TableInfo, predicate: exp.Expression) -> exp.Subquery:
    inner = node.copy()
    inner.set("this", exp.to_identifier(info.name, quoted=True))
    inner.set("db", exp.to_identifier(info.schema, quoted=True))
    inner.set("alias", exp.TableAlias(this=exp.to_identifier(INNER_ALIAS, quoted=True)))
    condition = predicate.copy()
    for column in condition.find_all(exp.Column):
        column.set("table", exp.to_identifier(INNER_ALIAS, quoted=True))
        column.set("db", None)
        column.set("catalog", None)
    select = exp.Select(expressions=[exp.Star()], from_=exp.From(this=inner), where=exp.Where(this=condition))
    alias = node.args.get("alias")
    if alias is None:
        alias = exp.TableAlias(this=node.this.copy())
    return exp.Subquery(this=select, alias=alias.copy())


def _unqualify_columns(
    tree: exp.Expression, predicates: Mapping[str, exp.Expression], fold: _Fold, catalog: Catalog
) -> None:
    """`sales.customers.email` named the table; it now names the derived table `customers`."""
    for column in tree.find_all(exp.Column):
        db, table = column.args.get("db"), column.args.get("table")
        if db is None or table is None:
            continue
        info = catalog.find(fold(table), fold(db))
        if info is not None and info.qualified in predicates:
            column.set("db", None)
            column.set("catalog", None)
