"""The lineage walk over queries: one pass over a statement's tree, scope by scope.

Queries are traced bottom-up into lists of `Col`, one per output column, as the database resolves
them: a FROM item is visible to later LATERAL items and function calls (implicitly lateral), a
plain derived table sees only the enclosing queries; CTE names are visible in their query and
later siblings (all siblings when RECURSIVE, traced to a fixpoint); `*` expands with JOIN ... USING
and NATURAL merging the join columns first, a JOIN binding tighter than a comma, as PostgreSQL
lists them. Expressions are the other half (`lineage_exprs.py`).

Whatever is not understood yields `untraced` columns, and a `*` that cannot be expanded (a
relation missing from the catalog, a function returning records of unknown columns) makes the
lineage inexact: its columns may not line up with the result's. Both fail closed downstream.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlglot.expressions as exp

from server.sql.lineage_exprs import DML, QUERIES, as_list
from server.sql.lineage_functions import TableFunctions
from server.sql.lineage_scope import UNTRACED, Acc, CatalogIndex, Col, Fold, Rel, Scope, merge, renamed

_MAX_DEPTH = 100
_MAX_QUERIES = 20_000  # queries traced per statement (nested recursive CTEs multiply them)
_FIXPOINT_ROUNDS = 8


class TooDeep(Exception):
    """Queries nested deeper, or more of them, than the walk follows; the caller marks
    everything untraced."""


def _positionwise(left: Sequence[Col], right: Sequence[Col]) -> list[Col]:
    if len(left) != len(right):
        width = max(len(left), len(right))
        return [UNTRACED] * width
    return [merge(a.name, (a, b)) for a, b in zip(left, right, strict=True)]


class Tracer(TableFunctions):
    """Traces one statement; `filters` and `exact` are filled as it goes."""

    def __init__(self, index: CatalogIndex, fold: Fold, dialect: str, sql: str = "") -> None:
        super().__init__(index, fold, dialect, sql)
        self._depth = 0
        self._work = 0

    # --- statements and queries ----------------------------------------------------------------

    def statement(self, root: exp.Expression) -> list[Col]:
        while isinstance(root, exp.Subquery) and isinstance(root.this, exp.Query):
            root = root.this
        if isinstance(root, DML):
            return self.dml(root, None, {})
        if isinstance(root, QUERIES):
            return self.query(root, None, {})
        return []

    def query(self, node: exp.Expression, outer: Scope | None, ctes: dict[str, list[Col] | None]) -> list[Col]:
        self._depth += 1
        self._work += 1
        if self._depth > _MAX_DEPTH or self._work > _MAX_QUERIES:
            raise TooDeep
        try:
            if isinstance(node, exp.Subquery):
                return self.query(node.this, outer, self._with(node, outer, ctes))
            if isinstance(node, exp.Select):
                return self._select(node, outer, ctes)
            if isinstance(node, exp.SetOperation):
                return self._set_operation(node, outer, ctes)
            if isinstance(node, exp.Values):
                return self._values(node, Scope(outer, ctes=ctes))
            if isinstance(node, DML):
                return self.dml(node, outer, ctes)
            self.exact = False
            return [UNTRACED]
        finally:
            self._depth -= 1

    def _select(self, node: exp.Select, outer: Scope | None, ctes: dict[str, list[Col] | None]) -> list[Col]:
        scope = Scope(outer, ctes=self._with(node, outer, ctes))
        self._from(node, scope)
        outputs = self._outputs(node.expressions, scope)
        scope.outputs = {col.name: col for col in outputs}
        for key, value in node.args.items():
            if key not in ("expressions", "from_", "joins", "with_", "into", "locks", "kind", "hint"):
                for child in as_list(value):
                    self.expr(child, scope, filtering=True)
        return outputs

    def _set_operation(
        self, node: exp.SetOperation, outer: Scope | None, ctes: dict[str, list[Col] | None]
    ) -> list[Col]:
        ctes = self._with(node, outer, ctes)
        cols = _positionwise(self.query(node.this, outer, ctes), self.query(node.expression, outer, ctes))
        if any(col is UNTRACED for col in cols):
            self.exact = False
        scope = Scope(outer, ctes=ctes, outputs={col.name: col for col in cols})
        for key in ("order", "limit", "offset"):
            for child in as_list(node.args.get(key)):
                self.expr(child, scope, filtering=True)
        return cols

    def _values(self, node: exp.Values, scope: Scope) -> list[Col]:
        rows = [row.expressions if isinstance(row, exp.Tuple) else [row] for row in node.expressions]
        width = max((len(row) for row in rows), default=0)
        cols = []
        for i in range(width):
            acc = Acc()
            for row in rows:
                if i < len(row):
                    self.expr(row[i], scope, into=acc)
            cols.append(acc.col(f"column{i + 1}"))
        return cols

    def _with(self, node: exp.Expression, outer: Scope | None, ctes: dict[str, list[Col] | None]) -> dict:
        with_ = node.args.get("with_")
        if not isinstance(with_, exp.With):
            return ctes
        env = dict(ctes)
        items = []
        for cte in with_.expressions:
            alias = cte.args.get("alias")
            if not isinstance(alias, exp.TableAlias) or alias.this is None:
                continue
            names = [self.fold(c.this if isinstance(c, exp.ColumnDef) else c) for c in alias.columns]
            items.append((self.fold(alias.this), names, cte.this))
        if not with_.args.get("recursive"):
            for name, names, body in items:
                env[name] = renamed(self.query(body, outer, env), names)
            return env
        for name, _, _ in items:
            env[name] = None  # known to be a CTE; its columns come from the fixpoint below
        for name, names, body in items:
            if isinstance(body, exp.SetOperation):  # the non-recursive term starts the fixpoint
                env[name] = renamed(self.query(body.this, outer, env), names)
        search = with_.args.get("search")
        for _ in range(_FIXPOINT_ROUNDS):
            changed = False
            for name, names, body in items:
                new = renamed(self.query(body, outer, env), names)
                old = env[name]
                merged = new if old is None else _positionwise(old, new)
                if merged != old:
                    env[name], changed = merged, True
            if not changed:
                return self._search_columns(search, items, env)
        for name, _, _ in items:  # did not settle: fail closed
            env[name] = [UNTRACED] * len(env[name] or [UNTRACED])
        return env

    def _search_columns(self, search: object, items: list, env: dict[str, list[Col] | None]) -> dict:
        """SEARCH ... SET s and CYCLE ... SET c USING p add columns to their CTE: values made of
        the columns searched by. sqlglot keeps one such clause for the whole WITH, so with
        several CTEs the one it belongs to is unknown: then none of them is exact."""
        if not isinstance(search, exp.RecursiveWithSearch):
            return env
        if len(items) != 1 or env[items[0][0]] is None:
            self.exact = False
            return env
        name = items[0][0]
        cols = list(env[name] or [])
        by = {self.fold(i) for i in search.find_all(exp.Identifier) if i is search.this or i.parent is search.this}
        carried = merge("", [c for c in cols if c.name in by]) if by else UNTRACED
        for key in ("expression", "using"):
            added = search.args.get(key)
            if isinstance(added, exp.Identifier):
                cols.append(carried.renamed(self.fold(added)))
        env[name] = cols
        return env

    # --- FROM --------------------------------------------------------------------------------

    def _from(self, node: exp.Expression, scope: Scope) -> None:
        """Add the FROM items to `scope` and work out `scope.star`."""
        segments: list[list[Col] | None] = []
        from_ = node.args.get("from_")
        if isinstance(from_, exp.From):
            segments.append(self._item(from_.this, scope))
        for join in node.args.get("joins") or ():
            self._join(join, scope, segments)
        scope.star = None if any(s is None for s in segments) else [c for s in segments for c in s]  # type: ignore[union-attr]

    def _join(self, join: exp.Join, scope: Scope, segments: list[list[Col] | None]) -> None:
        cols = self._item(join.this, scope)
        args = join.args
        comma = not any(args.get(key) for key in ("kind", "side", "on", "using", "method"))
        if comma or not segments:
            segments.append(cols)
            return
        left = segments[-1]
        using = [self.fold(name) for name in args.get("using") or ()]
        natural = str(args.get("method") or "").upper() == "NATURAL"
        if natural and left is not None and cols is not None:
            right_names = {col.name for col in cols}
            using = list(dict.fromkeys(col.name for col in left if col.name in right_names))
        if left is None or cols is None:
            segments[-1] = None
        elif using:
            merged = [merge(name, [c for c in (*left, *cols) if c.name == name]) for name in using]
            rest = [c for c in left if c.name not in using] + [c for c in cols if c.name not in using]
            segments[-1] = merged + rest
        else:
            segments[-1] = left + cols
        for name in using:
            self.expr(exp.column(name, quoted=True), scope, filtering=True)
        if args.get("on") is not None:
            self.expr(args["on"], scope, filtering=True)

    def _alias(self, node: exp.Expression) -> tuple[str | None, list[str]]:
        alias = node.args.get("alias")
        if not isinstance(alias, exp.TableAlias):
            return None, []
        names = [self.fold(c.this if isinstance(c, exp.ColumnDef) else c) for c in alias.columns]
        return (self.fold(alias.this) if alias.this is not None else None), names

    def _item(self, node: exp.Expression, scope: Scope) -> list[Col] | None:
        """Add one FROM item, and what sqlglot hangs under it (the joins of a parenthesized join,
        `DELETE ... USING a, b`), to `scope`; the columns `*` expands to, or None."""
        cols = self._single(node, scope)
        joins = node.args.get("joins")
        if not joins:
            return cols
        segments = [cols]
        for join in joins:
            self._join(join, scope, segments)
        return None if any(s is None for s in segments) else [c for s in segments for c in s]  # type: ignore[union-attr]

    def _single(self, node: exp.Expression, scope: Scope) -> list[Col] | None:
        alias, names = self._alias(node)
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Identifier):
            return self._table(node, alias, names, scope)
        if isinstance(node, exp.Subquery) and (isinstance(node.this, exp.Table) or node.this.args.get("joins")):
            # a parenthesized join, (a JOIN b ON ...) [AS j]
            cols = self._item(node.this, scope)
            if alias is not None:
                scope.rels.append(Rel(alias, None if cols is None else renamed(cols, names)))
            return cols
        if isinstance(node, exp.Lateral) and isinstance(node.this, exp.Subquery):
            return self._derived(node.this, alias, names, scope, lateral=True)
        if isinstance(node, exp.Subquery):
            return self._derived(node, alias, names, scope, lateral=bool(node.args.get("lateral")))
        if isinstance(node, exp.Values):
            cols = renamed(self._values(node, Scope(scope.parent, ctes=scope.ctes)), names)
            scope.rels.append(Rel(alias or "", cols))
            return cols
        functions: list[exp.Expression] = []
        if isinstance(node, exp.Table) and node.args.get("rows_from"):
            functions = [f.this if isinstance(f, exp.Table) else f for f in node.args["rows_from"]]
        elif isinstance(node, exp.Table | exp.Lateral) and isinstance(node.this, exp.Func):
            functions = [node.this]
        elif isinstance(node, exp.Unnest | exp.Func):
            functions = [node]
        if functions:
            return self._function(node, functions, alias, names, scope)
        self.exact = False
        scope.rels.append(Rel(alias or "", None, unknown_prefix=f"?.{alias or '?'}"))
        return None

    def _table(
        self, node: exp.Table, alias: str | None, names: list[str], scope: Scope, *, cte_ok: bool = True
    ) -> list[Col] | None:
        name = self.fold(node.this)
        db = node.args.get("db")
        schema = self.fold(db) if db is not None else None
        if cte_ok and schema is None and name in scope.ctes:
            cte = scope.ctes[name]
            rel = Rel(alias or name, None if cte is None else renamed(cte, names))
            scope.rels.append(rel)
            return rel.star()
        info = self.index.find(name, schema)
        if info is None:
            prefix = f"{schema or self.index.default_schema()}.{name}"
            scope.rels.append(Rel(alias or name, None, unknown_prefix=prefix))
            return None
        table = None if alias else (info.schema, name)
        rel = Rel(alias or name, renamed(self.index.columns(info), names), table=table)
        scope.rels.append(rel)
        return rel.star()

    def _derived(
        self, node: exp.Subquery, alias: str | None, names: list[str], scope: Scope, *, lateral: bool
    ) -> list[Col]:
        # a plain derived table sees only the enclosing queries; a LATERAL one, the items before it
        outer = scope if lateral else scope.parent
        cols = renamed(self.query(node.this, outer, self._with(node, outer, scope.ctes)), names)
        scope.rels.append(Rel(alias or "", cols))
        return cols

    # --- DML: what RETURNING shows -------------------------------------------------------------

    def dml(self, node: exp.Expression, outer: Scope | None, ctes: dict[str, list[Col] | None]) -> list[Col]:
        """The output of INSERT/UPDATE/DELETE is its RETURNING list, over the target's rows as
        written: every value written into the target counts as a source of every returned column."""
        scope = Scope(outer, ctes=self._with(node, outer, ctes))
        target = node.this
        if isinstance(target, exp.Schema):
            target = target.this
        returning = node.args.get("returning")
        if not (isinstance(target, exp.Table) and isinstance(target.this, exp.Identifier)):
            self.exact = False
            return [UNTRACED] if returning is not None else []
        alias, names = self._alias(target)
        star = self._table(target, alias, names, scope, cte_ok=False)
        target_rel = scope.rels[-1]
        written = Acc()
        if isinstance(node, exp.Insert):
            if node.args.get("expression") is not None:
                for col in self.query(node.args["expression"], outer, scope.ctes):
                    written.add(col, reveal=True)
            conflict = node.args.get("conflict")
            if isinstance(conflict, exp.OnConflict):
                scope.rels.append(Rel("excluded", target_rel.columns))
                for key, value in conflict.args.items():
                    for child in as_list(value):
                        self.expr(child, scope, filtering=key != "expressions", into=written)
        elif isinstance(node, exp.Update):
            self._from(node, scope)
            star = None if star is None or scope.star is None else star + scope.star
            for assignment in node.expressions:
                value = assignment.expression if isinstance(assignment, exp.EQ) else assignment
                self.expr(value, scope, into=written)
        elif isinstance(node, exp.Delete):
            for item in node.args.get("using") or ():
                cols = self._item(item, scope)
                star = None if star is None or cols is None else star + cols
        else:  # MERGE has no RETURNING before PostgreSQL 17
            return []
        self.expr(node.args.get("where") or exp.null(), scope, filtering=True)
        if returning is None:
            return []
        if (written.sources or written.untraced) and target_rel.columns is not None:
            target_rel.columns = [merge(c.name, (c, written.col(c.name))) for c in target_rel.columns]
            target_rel._index = None
            if star is not None:
                star = [merge(c.name, (c, written.col(c.name))) for c in star]
        scope.star = star
        return self._outputs(returning.expressions, scope)
