"""Table functions in FROM for the lineage walk: their columns, computed from their arguments.

A set-returning function's output is computed from its arguments (`unnest(o.tags)` yields
elements of `tags`, `jsonb_each(c.data)` keys and values of `data`), evaluated laterally in the
FROM clause. What `*` expands to needs the function's output columns: known for the common
set-returning functions (one column named after the alias, or fixed names such as `key, value`),
given by a column alias list, and otherwise unknown (the lineage is then inexact). `unnest` of an
array whose element type might be composite expands into that type's fields, so its `*` counts
only when the array is provably of a scalar type (a catalog column of type `text[]`, an
`ARRAY[...]` of literals, a cast to a scalar array type).
"""

from __future__ import annotations

import sqlglot.expressions as exp

from server.sql.lineage_exprs import Expressions, as_list
from server.sql.lineage_scope import Acc, Col, Rel, Scope, renamed

# set-returning functions and their output columns (None: one column, named after the alias)
_SRF_COLUMNS: dict[str, tuple[str, ...] | None] = {
    "generate_series": None,
    "generate_subscripts": None,
    "regexp_matches": None,
    "regexp_split_to_table": None,
    "string_to_table": None,
    "json_object_keys": None,
    "jsonb_object_keys": None,
    "jsonb_path_query": None,
    "json_each": ("key", "value"),
    "jsonb_each": ("key", "value"),
    "json_each_text": ("key", "value"),
    "jsonb_each_text": ("key", "value"),
    "json_array_elements": ("value",),
    "jsonb_array_elements": ("value",),
    "json_array_elements_text": ("value",),
    "jsonb_array_elements_text": ("value",),
    "pg_options_to_table": ("option_name", "option_value"),
}
_SQLITE_JSON_TABLE = ("key", "value", "type", "atom", "id", "parent", "fullkey", "path")
# element types (as format_type() spells them) whose arrays unnest into one column; an array of a
# composite type unnests into the type's fields, which the catalog does not describe
_SCALAR_TYPES = frozenset(
    {
        "smallint",
        "integer",
        "bigint",
        "numeric",
        "real",
        "double precision",
        "text",
        "character varying",
        "character",
        "boolean",
        "date",
        "time without time zone",
        "time with time zone",
        "timestamp without time zone",
        "timestamp with time zone",
        "interval",
        "uuid",
        "json",
        "jsonb",
        "bytea",
        "inet",
        "cidr",
        "macaddr",
        "money",
        "xml",
        "name",
    }
)
_SCALAR_DTYPES = frozenset(
    t
    for t in exp.DataType.Type
    if t not in (exp.DataType.Type.USERDEFINED, exp.DataType.Type.STRUCT, exp.DataType.Type.UNKNOWN)
)


class TableFunctions(Expressions):
    """Table functions in FROM; mixed into the query walk (`lineage_trace.Tracer`)."""

    def _function(
        self, node: exp.Expression, functions: list[exp.Expression], alias: str | None, names: list[str], scope: Scope
    ) -> list[Col] | None:
        """A table function: its columns are computed from its arguments (evaluated laterally)."""
        acc = Acc()
        for function in functions:
            for key, value in function.args.items():
                if key != "alias":
                    for child in as_list(value):
                        self.expr(child, scope, into=acc)
        template = acc.col("")
        cols: list[Col] | None = []
        for function in functions:
            fname = (function.name if isinstance(function, exp.Anonymous) else function.sql_name()).lower()
            if isinstance(function, exp.Unnest):
                width = max(len(function.expressions), 1)
                single = width == 1 and len(functions) == 1
                outs: tuple[str, ...] | None = ((alias or "unnest"),) if single else ("unnest",) * width
                if not names and not all(self._scalar_array(arg, scope) for arg in function.expressions):
                    outs = None  # it may unnest rows of a composite type into their fields
            elif isinstance(function, exp.GenerateSeries):
                outs = ((alias if len(functions) == 1 and alias else "generate_series"),)
            elif fname in _SRF_COLUMNS:
                known = _SRF_COLUMNS[fname]
                outs = known if known is not None else ((alias if len(functions) == 1 and alias else fname),)
            elif self.dialect == "sqlite" and fname in ("json_each", "json_tree"):
                outs = _SQLITE_JSON_TABLE
            else:
                outs = None
            if outs is None or cols is None:
                cols = None
                continue
            cols.extend(template.renamed(out) for out in outs)
        ordinality = (
            node.args.get("ordinality")
            or node.args.get("offset")
            or next((f.args.get("offset") for f in functions if f.args.get("offset")), None)
        )
        if cols is not None and ordinality:
            # `WITH ORDINALITY AS u(val, pos)`: sqlglot keeps the last name, the ordinality's, apart
            named = ordinality.name if isinstance(ordinality, exp.Identifier) else ""
            cols.append(Col(self.fold(ordinality) if named else "ordinality"))
        if names and (cols is None or len(names) >= len(cols)):
            cols = [template.renamed(n) for n in names]
        elif cols is not None:
            cols = renamed(cols, names)
        name = alias or (functions[0].sql_name().lower() if functions else "")
        rel = Rel(name, cols, unknown_sources=template.sources, unknown_untraced=template.untraced)
        scope.rels.append(rel)
        return cols

    def _scalar_array(self, node: exp.Expression, scope: Scope) -> bool:
        """Whether `node` is provably an array of a scalar type (so unnest gives one column)."""
        if isinstance(node, exp.Array):
            return all(isinstance(e, exp.Literal | exp.Null | exp.Boolean | exp.Neg) for e in node.expressions)
        if isinstance(node, exp.Cast):
            to = node.args.get("to")
            inner = to.expressions[0] if isinstance(to, exp.DataType) and len(to.expressions) == 1 else None
            return (
                isinstance(to, exp.DataType)
                and to.this == exp.DataType.Type.ARRAY
                and isinstance(inner, exp.DataType)
                and inner.this in _SCALAR_DTYPES
            )
        if isinstance(node, exp.Column):
            col = self._column(node, scope, filtering=False)
            if len(col.sources) != 1:
                return False
            data_type = self.index.data_type(next(iter(col.sources))) or ""
            base = data_type.removesuffix("[]").split("(")[0].strip()
            return data_type.endswith("[]") and base in _SCALAR_TYPES
        return False
