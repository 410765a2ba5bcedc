"""The contract every database backend meets.

The pipeline talks to a `Database` only through these methods and values, so PostgreSQL and SQLite
look the same to it. Backends translate every driver exception into `QueryFailed` with a message
that never echoes a row value or a DSN.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    data_type: str
    nullable: bool
    primary_key: bool = False
    comment: str | None = None
    default: str | None = None


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    ref_schema: str
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    kind: str  # "table" | "view" | "materialized_view" | "foreign_table"
    columns: tuple[ColumnInfo, ...]
    comment: str | None = None
    primary_key: tuple[str, ...] = ()
    foreign_keys: tuple[ForeignKey, ...] = ()
    #: a view's defining query (PostgreSQL's rendering), so its columns inherit their sources' PII
    definition: str | None = field(default=None, compare=False)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    def column(self, name: str) -> ColumnInfo | None:
        for col in self.columns:
            if col.name == name:
                return col
        return None


@dataclass(frozen=True)
class Catalog:
    """A snapshot of one database's user relations (system schemas excluded)."""

    database: str
    dialect: str
    tables: Mapping[tuple[str, str], TableInfo]
    search_path: tuple[str, ...] = ("public",)
    schemas: tuple[str, ...] = field(default=())
    #: names of functions and symbols of operators defined in user schemas (not by an extension):
    #: a call or operator with such a name may resolve to user code Bastion cannot see
    user_functions: frozenset[str] = frozenset()
    user_operators: frozenset[str] = frozenset()
    #: (schema, table) -> its inheritance children and partitions, which a read of it also reads
    children: Mapping[tuple[str, str], tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def descendants(self, schema: str, name: str) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        pending = list(self.children.get((schema, name), ()))
        while pending:
            child = pending.pop()
            if child not in found:
                found.append(child)
                pending.extend(self.children.get(child, ()))
        return found

    def find(self, name: str, schema: str | None = None) -> TableInfo | None:
        """Resolve a table as the database would: an explicit schema, else the first schema of the
        search_path that has it."""
        if schema is not None:
            return self.tables.get((schema, name))
        for candidate in self.search_path:
            info = self.tables.get((candidate, name))
            if info is not None:
                return info
        return None


@dataclass(frozen=True)
class ResultColumn:
    name: str
    type_name: str


@dataclass(frozen=True)
class QueryResult:
    columns: tuple[ResultColumn, ...]
    rows: list[tuple[Any, ...]]
    row_count: int
    truncated: bool = False
    #: "rows" when max_rows cut the result, "bytes" when max_result_bytes did
    truncated_by: str | None = None
    #: for writes: rows affected as the database reports them
    affected_rows: int | None = None


@dataclass(frozen=True)
class ExecutionLimits:
    max_rows: int
    max_result_bytes: int
    statement_timeout_ms: int


class Database(Protocol):
    name: str
    dialect: str  # sqlglot dialect: "postgres" | "sqlite"

    async def open(self) -> None:
        """Connect (pool, file) and run start-up checks (e.g. refuse a privileged role)."""

    async def close(self) -> None: ...

    async def catalog(self, *, refresh: bool = False) -> Catalog:
        """The cached catalog snapshot; `refresh` re-reads it from the database."""

    async def fetch_read(self, sql: str, limits: ExecutionLimits) -> QueryResult:
        """Run one read statement with the database enforcing it: read-only transaction, one statement,
        statement timeout; stream at most `limits.max_rows` rows (fetching one more to report
        truncation) and at most `limits.max_result_bytes` bytes."""

    async def explain(self, sql: str, limits: ExecutionLimits) -> list[str]:
        """The database's plan for a statement, without running it (no ANALYZE), in a read-only
        transaction."""

    async def execute_write(self, sql: str, limits: ExecutionLimits) -> QueryResult:
        """Run one write statement that policy allowed, in a read-write transaction with the same
        timeout; `affected_rows` from the database, RETURNING rows capped like reads. A database
        configured `read_only: true` refuses it."""
