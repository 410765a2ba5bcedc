"""The values lineage works with: a column's lineage, a FROM item, a query scope, the catalog.

Kept apart from the walk (`lineage_trace.py`) so that each module stays readable on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

import sqlglot.expressions as exp

from server.db.base import Catalog, TableInfo

Fold = Callable[[exp.Expression | str], str]


@dataclass(frozen=True)
class Col:
    """One column's lineage: the base columns ("schema.table.column") its values are computed
    from, those of them whose values can show (not only through count/EXISTS), and whether
    something on the way was not understood."""

    name: str
    sources: frozenset[str] = frozenset()
    revealed: frozenset[str] = frozenset()
    untraced: bool = False

    def renamed(self, name: str) -> Col:
        return self if name == self.name else replace(self, name=name)


UNTRACED = Col("?column?", untraced=True)


def renamed(cols: Sequence[Col], names: Sequence[str]) -> list[Col]:
    """A column alias list renames the first columns, as `AS t(a, b)` does."""
    return [col.renamed(names[i]) if i < len(names) else col for i, col in enumerate(cols)]


def merge(name: str, cols: Iterable[Col]) -> Col:
    """The lineage of a value that may come from any of `cols` (an ambiguous name, a UNION)."""
    sources: set[str] = set()
    revealed: set[str] = set()
    untraced = False
    for col in cols:
        sources |= col.sources
        revealed |= col.revealed
        untraced = untraced or col.untraced
    return Col(name, frozenset(sources), frozenset(revealed), untraced)


@dataclass
class Acc:
    """What an expression's value is computed from, accumulated node by node."""

    sources: set[str] = field(default_factory=set)
    revealed: set[str] = field(default_factory=set)
    untraced: bool = False

    def add(self, col: Col, reveal: bool) -> None:
        self.sources |= col.sources
        if reveal:
            self.revealed |= col.revealed
        self.untraced = self.untraced or col.untraced

    def col(self, name: str) -> Col:
        return Col(name, frozenset(self.sources), frozenset(self.revealed), self.untraced)


@dataclass
class Rel:
    """A FROM item as the query sees it.

    `columns` is None when they are not known (a relation missing from the catalog, a function
    returning records without a column list); a column of it then contributes `unknown`:
    the function's argument sources, or the relation's name marked untraced."""

    alias: str
    columns: list[Col] | None
    #: (schema, name) of a base relation referenced without an alias, for `schema.table.column`
    table: tuple[str, str] | None = None
    unknown_prefix: str | None = None  # "schema.table" of a relation missing from the catalog
    unknown_sources: frozenset[str] = frozenset()  # a table function's argument sources
    unknown_untraced: bool = False  # and whether they were not all traced
    _index: dict[str, list[Col]] | None = None

    def find(self, name: str) -> Col | None:
        """The column `name` of this item, None if it has none (ambiguous names merge)."""
        if self.columns is None:
            if self.unknown_prefix is not None:
                source = f"{self.unknown_prefix}.{name}"
                return Col(name, frozenset({source}), frozenset({source}), untraced=True)
            return Col(name, self.unknown_sources, self.unknown_sources, self.unknown_untraced)
        if self._index is None:
            self._index = {}
            for col in self.columns:
                self._index.setdefault(col.name, []).append(col)
        found = self._index.get(name)
        if not found:
            return None
        return found[0] if len(found) == 1 else merge(name, found)

    def whole_row(self, name: str) -> Col:
        """`t`, `t.*` or `t::text` used as a value: every column of the row."""
        if self.columns is None:
            return self.find("*") or UNTRACED
        return merge(name, self.columns)

    def star(self) -> list[Col] | None:
        return None if self.columns is None else list(self.columns)


@dataclass
class Scope:
    """One query level: its FROM items, what `*` expands to, and the enclosing query's scope."""

    parent: Scope | None
    rels: list[Rel] = field(default_factory=list)
    star: list[Col] | None = field(default_factory=list)  # None: not known
    outputs: dict[str, Col] = field(default_factory=dict)  # select-list names, for ORDER BY
    #: the CTEs visible here, by name; None while a recursive WITH is still being traced
    ctes: dict[str, list[Col] | None] = field(default_factory=dict)

    def rel(self, alias: str) -> Rel | None:
        for rel in reversed(self.rels):
            if rel.alias == alias:
                return rel
        return None


class CatalogIndex:
    """Catalog lookups as the database resolves names: exact for PostgreSQL (identifiers are
    already folded), case-insensitive for SQLite."""

    def __init__(self, catalog: Catalog, fold: Fold) -> None:
        self.catalog = catalog
        self.fold = fold
        self._lower = catalog.dialect == "sqlite"
        self._tables: dict[tuple[str, str], TableInfo] = {
            (fold(schema), fold(name)) if self._lower else (schema, name): info
            for (schema, name), info in catalog.tables.items()
        }
        self._search_path = tuple(fold(s) if self._lower else s for s in catalog.search_path)
        self._columns: dict[tuple[str, str], list[Col]] = {}
        self._types: dict[str, str] = {}

    def find(self, name: str, schema: str | None) -> TableInfo | None:
        if schema is not None:
            return self._tables.get((schema, name))
        for candidate in self._search_path:
            info = self._tables.get((candidate, name))
            if info is not None:
                return info
        return None

    def columns(self, info: TableInfo) -> list[Col]:
        """The relation's columns, each its own source; views are opaque relations."""
        key = (info.schema, info.name)
        cols = self._columns.get(key)
        if cols is None:
            cols = []
            for column in info.columns:
                qualified = f"{info.schema}.{info.name}.{column.name}"
                source = frozenset({qualified})
                name = self.fold(column.name) if self._lower else column.name
                cols.append(Col(name, source, source))
                self._types[qualified] = column.data_type
            self._columns[key] = cols
        return cols

    def data_type(self, source: str) -> str | None:
        """The catalog's type of a base column already resolved by `columns()`."""
        return self._types.get(source)

    def default_schema(self) -> str:
        return self._search_path[0] if self._search_path else ("main" if self._lower else "public")
