"""Output-column lineage: which base columns each value of a result is computed from.

Masking by column name alone is defeated by `SELECT phone AS note`, `upper(email)`,
`row_to_json(c)` or a UNION with an innocuous first branch. So every output column of a statement
is traced through the query, to the catalog's base columns ("schema.table.column"; a view is an
opaque relation, its columns are "schema.view.column"), and the masking stage masks a value
derived from a PII column whatever it is called. Three things are reported besides:

- `revealing`: False when every source reaches the output only through aggregates that reveal no
  value, `count(x)`, `count(DISTINCT x)`, `EXISTS (...)`; everything else (min, max, sum, avg,
  string_agg, array_agg, json_agg, first_value, a comparison) reveals, since in small groups it
  gives the value away. `revealed` lists the sources whose values can show.
- `untraced`: something on the way was not understood; the caller treats the value as free text
  and scans it. Failing closed, never an exception: any fault in the walk makes every column
  untraced and the lineage inexact.
- `OutputLineage.filters`: columns that decide which rows come back or in which order (WHERE,
  JOIN ON, GROUP BY, HAVING, ORDER BY, window PARTITION/ORDER BY, FILTER, DISTINCT ON) without
  reaching the output, for a policy that wants to restrict probing.

A whole-row reference (`row_to_json(t)`, `to_jsonb(t.*)`, `json_agg(t)`, `t::text`, `ROW(t.*)`)
carries every column of the row; a composite field `(t).email` carries the whole row too. A column
name ambiguous between tables carries both. sqlglot's own `lineage()` is not used: it costs about
1 ms per column, loses whole-row references and traces a LATERAL subquery's columns to the outer
table. This is one pass over the statement's tree (`lineage_trace.py`), 0.13 ms for a
3-table join with 10 output columns, cached by (SQL, dialect, catalog snapshot).

The result's columns are matched by position, so `aligned(n)` is how a caller should read the
lineage of a result of n columns: the columns themselves when the lineage is exact and has n of
them; otherwise (a `*` over a relation missing from the catalog, a composite expanded with
`(x).*`, a width that differs) n untraced columns, each carrying every source of the statement,
so that masking still applies to all of them and the values are scanned besides. An inexact
lineage's own `columns` already have that form.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock

from server.db.base import Catalog
from server.sql.analyzer import _fold_postgres, _fold_sqlite
from server.sql.lineage_scope import CatalogIndex, Col
from server.sql.lineage_trace import Tracer
from server.sql.statement import Statement

__all__ = ["OutputColumn", "OutputLineage", "cache_clear", "lineage", "trace_columns"]

log = logging.getLogger(__name__)

_FOLDS = {"postgres": _fold_postgres, "sqlite": _fold_sqlite}
_CACHE_SIZE = 512
_INDEXES = 8


@dataclass(frozen=True)
class OutputColumn:
    name: str
    #: "schema.table.column" of every base column the value is computed from
    sources: frozenset[str]
    #: False when the sources reach the value only through aggregates that reveal none (count,
    #: count distinct, exists); True otherwise, and whenever something was not traced
    revealing: bool
    #: True when something could not be traced: the caller treats the value as free text
    untraced: bool
    #: the sources whose values can show (a subset of `sources`)
    revealed: frozenset[str] = frozenset()


@dataclass(frozen=True)
class OutputLineage:
    columns: tuple[OutputColumn, ...]
    #: base columns that filter, group or order rows without reaching the output
    filters: frozenset[str]
    #: False when the columns may not line up with the result's (then trust none of them)
    exact: bool = True
    #: `alias.name` references to columns the relation does not have (PostgreSQL would call a
    #: function `name(alias)`): the caller refuses the statement
    phantoms: frozenset[str] = frozenset()
    #: comparisons in filters: (the sources of one side, whether the other side varies per row,
    #: the other side's sources)
    comparisons: tuple[tuple[frozenset[str], bool, frozenset[str]], ...] = ()

    def aligned(self, count: int) -> tuple[OutputColumn, ...]:
        """The lineage of a result with `count` columns, position by position; every column
        untraced (and revealing) unless this lineage is exact and has that many columns."""
        if self.exact and len(self.columns) == count:
            return self.columns
        return _union(count, self.columns)


_UNKNOWN = OutputLineage((OutputColumn("?column?", frozenset(), True, True),), frozenset(), exact=False)


def trace_columns(statement: Statement, catalog: Catalog) -> tuple[OutputColumn, ...]:
    """Each output column of `statement` with the base columns it is computed from."""
    return lineage(statement, catalog).columns


def lineage(statement: Statement, catalog: Catalog) -> OutputLineage:
    """The statement's output lineage and filter columns, cached by (SQL, dialect, catalog).

    A catalog is an immutable snapshot, so its identity is its fingerprint: a changed catalog is a
    new object, and an entry keeps its own catalog alive so the identity cannot be reused."""
    key = (statement.sql, statement.dialect, id(catalog))
    with _lock:
        hit = _cache.get(key)
        if hit is not None and hit[0] is catalog:
            _cache.move_to_end(key)
            return hit[1]
    result = _trace(statement, catalog)
    with _lock:
        _cache[key] = (catalog, result)
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return result


def cache_clear() -> None:
    with _lock:
        _cache.clear()
        _indexes.clear()


_cache: OrderedDict[tuple[str, str, int], tuple[Catalog, OutputLineage]] = OrderedDict()
_indexes: OrderedDict[int, tuple[Catalog, CatalogIndex]] = OrderedDict()
_lock = Lock()


def _index(catalog: Catalog, dialect: str) -> CatalogIndex:
    with _lock:
        hit = _indexes.get(id(catalog))
        if hit is not None and hit[0] is catalog:
            return hit[1]
    index = CatalogIndex(catalog, _FOLDS[dialect])
    with _lock:
        _indexes[id(catalog)] = (catalog, index)
        while len(_indexes) > _INDEXES:
            _indexes.popitem(last=False)
    return index


def _column(col: Col) -> OutputColumn:
    revealing = col.untraced or not col.sources or bool(col.revealed)
    return OutputColumn(col.name, col.sources, revealing, col.untraced, col.revealed)


def _trace(statement: Statement, catalog: Catalog) -> OutputLineage:
    fold = _FOLDS.get(statement.dialect)
    if fold is None:
        return _UNKNOWN
    try:
        tracer = Tracer(_index(catalog, statement.dialect), fold, statement.dialect, statement.sql)
        cols = tracer.statement(statement.ast)
    except Exception as error:  # fail closed: the values are scanned instead; never leak the fault
        log.warning("lineage could not trace a %s statement (%s)", statement.kind.value, type(error).__name__)
        return _UNKNOWN
    columns = tuple(_column(col) for col in cols)
    if not tracer.exact:  # safe even for a caller that zips without asking `aligned()`
        columns = _union(len(columns), columns)
    return OutputLineage(
        columns, frozenset(tracer.filters), tracer.exact, frozenset(tracer.phantoms), tuple(tracer.comparisons)
    )


def _union(count: int, columns: tuple[OutputColumn, ...]) -> tuple[OutputColumn, ...]:
    """`count` untraced columns, each carrying every source of `columns`."""
    sources = frozenset(s for column in columns for s in column.sources)
    revealed = frozenset(s for column in columns for s in column.revealed)
    return tuple(OutputColumn("?column?", sources, True, True, revealed) for _ in range(count))
