"""Expressions for the lineage walk: what a value is computed from, and what filters rows.

An expression is walked iteratively (a chain of 3,000 ORs must not exhaust the stack), every
column reference it contains accumulated into an `Acc`, with two flags carried down: whether the
value can still show (not below count() or EXISTS) and whether the position only filters, orders
or groups rows (WHERE, JOIN ON, GROUP BY, HAVING, ORDER BY, window PARTITION/ORDER BY, FILTER,
DISTINCT ON, LIMIT), whose columns go to `filters` instead of the output. Subqueries met on the
way are traced by the query walk (`lineage_trace.Tracer.query`) with the current scope as their
enclosing one.

Names resolve as PostgreSQL resolves them: an unqualified name is a column of the innermost scope
that has one (every match when it is ambiguous), else of an enclosing scope, else a whole-row
reference to a FROM item of that name; `t.x` is column x of the FROM item t, or field x of a
composite column t (then the whole column is the source, to be safe).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlglot.expressions as exp

from server.sql.lineage_scope import UNTRACED, Acc, CatalogIndex, Col, Fold, Rel, Scope, merge

DML = (exp.Insert, exp.Update, exp.Delete, exp.Merge)
QUERIES = (exp.Select, exp.SetOperation, exp.Subquery, exp.Values)
_QUERIES_AND_DML = (*QUERIES, *DML)
# SQL value functions written without parentheses, which sqlglot may parse as column names
_VALUE_KEYWORDS = frozenset(
    {
        "user",
        "current_user",
        "session_user",
        "current_role",
        "current_catalog",
        "current_schema",
        "system_user",
        "current_date",
        "current_time",
        "current_timestamp",
        "localtime",
        "localtimestamp",
    }
)


def as_list(value: object) -> list[exp.Expression]:
    """An argument of a node as a list of the expressions in it."""
    if isinstance(value, exp.Expr):
        return [value]  # type: ignore[list-item]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, exp.Expr)]  # type: ignore[misc]
    return []


class Expressions:
    """The expression half of the walk; `filters` and `exact` are filled as it goes."""

    def __init__(self, index: CatalogIndex, fold: Fold, dialect: str, sql: str = "") -> None:
        self.sql = sql
        self.index = index
        self.fold = fold
        self.dialect = dialect
        self.filters: set[str] = set()
        #: `alias.name` references to a relation of known columns that has no such column: PostgreSQL
        #: reads them as a call `name(alias)` (functional notation), which may run any function
        self.phantoms: set[str] = set()
        #: comparisons in filtering positions: (sources of one side, whether the other side varies
        #: per row). `substr(email, i, 1) = d.ch` joined against an alphabet spells a masked value
        #: out character by character; the caller refuses it when the column is masked
        self.comparisons: list[tuple[frozenset[str], bool, frozenset[str]]] = []
        self.exact = True

    def query(self, node: exp.Expression, outer: Scope | None, ctes: dict[str, list[Col] | None]) -> list[Col]:
        raise NotImplementedError  # the query walk, in lineage_trace.Tracer

    def _outputs(self, expressions: Sequence[exp.Expression], scope: Scope) -> list[Col]:
        outputs: list[Col] = []
        for item in expressions:
            if isinstance(item, exp.Star):
                if scope.star is None:
                    self.exact = False
                    outputs.append(UNTRACED)
                else:
                    outputs.extend(scope.star)
            elif isinstance(item, exp.Column) and isinstance(item.this, exp.Star):
                rel = self._rel_of(item, scope)
                star = rel.star() if rel is not None else None
                if star is None:
                    self.exact = False
                    outputs.append(UNTRACED)
                else:
                    outputs.extend(star)
            elif isinstance(item, exp.Dot) and isinstance(item.expression, exp.Star):
                # (composite).* expands into the fields of a type the catalog does not describe
                self.exact = False
                acc = self.expr(item.this, scope)
                acc.untraced = True
                outputs.append(acc.col("?column?"))
            else:
                outputs.append(self.expr(item, scope).col(self._output_name(item, scope)))
        return outputs

    # --- expressions ---------------------------------------------------------------------------

    def expr(self, node: exp.Expression, scope: Scope, *, filtering: bool = False, into: Acc | None = None) -> Acc:
        """What `node`'s value is computed from; columns in filtering positions go to `filters`."""
        acc = into if into is not None else Acc()
        stack: list[tuple[exp.Expression, bool, bool]] = [(node, True, filtering)]
        while stack:
            item, reveal, filt = stack.pop()
            if isinstance(item, exp.Column):
                self._add(acc, self._column(item, scope, filt), reveal, filt)
            elif isinstance(item, _QUERIES_AND_DML):
                for col in self.query(item, scope, scope.ctes):
                    self._add(acc, col, reveal, filt)
            elif isinstance(item, exp.Exists):  # whether rows exist, not their values
                stack.append((item.this, False, filt))
            elif isinstance(item, exp.Count):  # how many, not which
                stack.extend((child, False, filt) for child in _children(item))
            elif isinstance(item, exp.Window):
                stack.append((item.this, reveal, filt))
                stack.extend((c, reveal, True) for key, v in item.args.items() if key != "this" for c in as_list(v))
            elif isinstance(item, exp.Filter):
                stack.append((item.this, reveal, filt))
                stack.append((item.expression, reveal, True))
            elif isinstance(item, exp.WithinGroup):  # mode() WITHIN GROUP (ORDER BY x) returns an x
                stack.append((item.this, reveal, filt))
                order = item.expression
                for ordered in order.expressions if isinstance(order, exp.Order) else as_list(order):
                    stack.append((ordered.this if isinstance(ordered, exp.Ordered) else ordered, reveal, filt))
            elif isinstance(item, exp.Order):  # string_agg(x ORDER BY y): y orders, x is the value
                if item.this is not None:
                    stack.append((item.this, reveal, filt))
                stack.extend((child, reveal, True) for child in item.expressions)
            elif isinstance(item, exp.Lambda):
                acc.untraced = True
            elif filt and isinstance(item, _COMPARISONS):
                self._comparison(item, scope)
                stack.extend((child, reveal, filt) for child in _children(item))
            else:
                stack.extend((child, reveal, filt) for child in _children(item))
        return acc

    def _comparison(self, item: exp.Expression, scope: Scope) -> None:
        sides = [child for child in _children(item) if isinstance(child, exp.Expression)]
        side_sources = [frozenset(self.expr(side, scope).col("").sources) for side in sides]
        for index, sources in enumerate(side_sources):
            if not sources:
                continue
            others = sides[:index] + sides[index + 1 :]
            other_sources = frozenset().union(*(side_sources[:index] + side_sources[index + 1 :]))
            self.comparisons.append((sources, any(_varies(other) for other in others), other_sources))

    def _add(self, acc: Acc, col: Col, reveal: bool, filtering: bool) -> None:
        if filtering:
            self.filters |= col.sources
        else:
            acc.add(col, reveal)

    def _column(self, node: exp.Column, scope: Scope, filtering: bool) -> Col:
        if isinstance(node.this, exp.Star):  # t.* as a value: row_to_json(t.*), ROW(t.*)
            rel = self._rel_of(node, scope)
            return rel.whole_row("*") if rel is not None else UNTRACED
        name = self.fold(node.this)
        if node.args.get("table") is None:
            return self._unqualified(name, scope, filtering)
        rel = self._rel_of(node, scope)
        if rel is not None:
            found = rel.find(name)
            if found is None and rel.columns is not None:
                self.phantoms.add(f"{rel.alias}.{name}")
                return rel.whole_row(name)
            return found or UNTRACED
        # not a FROM item: the field of a composite column, `a.b`; the whole column, to be safe
        return self._unqualified(self.fold(node.args["table"]), scope, filtering)

    def _rel_of(self, node: exp.Column, scope: Scope) -> Rel | None:
        table = self.fold(node.args["table"])
        db = node.args.get("db")
        schema = self.fold(db) if db is not None else None
        current: Scope | None = scope
        while current is not None:
            for rel in reversed(current.rels):
                if (rel.alias == table) if schema is None else (rel.table == (schema, table)):
                    return rel
            current = current.parent
        return None

    def _unqualified(self, name: str, scope: Scope, filtering: bool) -> Col:
        """A column of the innermost scope that has one (merged when ambiguous), else of an
        enclosing one; else a whole-row reference. A relation of unknown columns may hold any
        name, so its guess is merged with whatever else the name could be."""
        found: list[Col] = []
        current: Scope | None = scope
        while current is not None:
            known = False
            for rel in current.rels:
                col = rel.find(name)
                if col is not None:
                    found.append(col)
                    known = known or rel.columns is not None
            if filtering and current is scope and name in current.outputs:
                found.append(current.outputs[name])
                known = True
            if known:
                return merge(name, found)
            current = current.parent
        current = scope
        while current is not None:
            rel = current.rel(name)
            if rel is not None:
                found.append(rel.whole_row(name))
                break
            current = current.parent
        if found:
            return merge(name, found)
        return Col(name) if name in _VALUE_KEYWORDS else UNTRACED

    def _output_name(self, item: exp.Expression, scope: Scope) -> str:
        """The output column's name, as PostgreSQL would mostly call it (for display only: the
        result's columns are matched by position)."""
        if isinstance(item, exp.Alias):
            return self.fold(item.args["alias"])
        node = item
        while isinstance(node, exp.Cast | exp.TryCast | exp.Paren | exp.Window | exp.Filter | exp.WithinGroup):
            node = node.this
        if isinstance(node, exp.Column):
            return self.fold(node.this) if isinstance(node.this, exp.Identifier) else "?column?"
        if isinstance(node, exp.Exists):
            return "exists"
        if isinstance(node, exp.Case):
            return "case"
        if isinstance(node, exp.Anonymous):
            return node.name.lower()
        if isinstance(node, exp.Func):  # the name as written; operators sqlglot models as functions have none
            start, end = node.meta.get("start"), node.meta.get("end")
            if isinstance(start, int) and isinstance(end, int) and self.sql:
                return self.fold(self.sql[start : end + 1].strip('"')).lower()
        return "?column?"


_COMPARISONS: tuple[type[exp.Expression], ...] = tuple(
    node_type
    for node_type in (
        exp.EQ,
        exp.NEQ,
        exp.GT,
        exp.GTE,
        exp.LT,
        exp.LTE,
        exp.Like,
        exp.ILike,
        exp.In,
        exp.Between,
        getattr(exp, "SimilarTo", None),
        getattr(exp, "NullSafeEQ", None),
        getattr(exp, "NullSafeNEQ", None),
        getattr(exp, "RegexpLike", None),
        getattr(exp, "RegexpILike", None),
        getattr(exp, "Glob", None),
    )
    if node_type is not None
)


def _varies(node: exp.Expression) -> bool:
    """Whether a comparison operand can take a different value on each row: it reads a column or
    a subquery, as opposed to literals and functions of them."""
    return node.find(exp.Column, exp.Select, exp.Subquery, exp.Star) is not None


def _children(node: exp.Expression) -> list[exp.Expression]:
    return [child for value in node.args.values() for child in as_list(value)]
