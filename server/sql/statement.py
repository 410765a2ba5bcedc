"""What the analyzer knows about one SQL statement.

The later stages (authorize, rewrite, execute, mask, audit) work on this frozen value rather than on
SQL text, so what they decide is always about what the analyzer understood.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import sqlglot.expressions as exp


class StatementKind(StrEnum):
    SELECT = "select"
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    MERGE = "merge"
    DDL = "ddl"
    ADMIN = "admin"
    TRANSACTION = "transaction"

    @property
    def is_write(self) -> bool:
        return self in (StatementKind.INSERT, StatementKind.UPDATE, StatementKind.DELETE, StatementKind.MERGE)


@dataclass(frozen=True, order=True)
class TableRef:
    """A relation named by the statement. `schema` is None when the SQL did not qualify it;
    `resolve_tables` fills it in from the database's search_path."""

    name: str
    schema: str | None = None

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True, order=True)
class ColumnRef:
    """A column named anywhere in the statement. `table` is the table's alias or name as written
    (None when unqualified); it is not resolved to a TableRef at this stage."""

    name: str
    table: str | None = None


@dataclass(frozen=True)
class Statement:
    sql: str
    dialect: str
    kind: StatementKind
    tables: tuple[TableRef, ...]
    columns: tuple[ColumnRef, ...]
    functions: tuple[str, ...]
    ast: exp.Expression = field(compare=False, repr=False)
    #: operator symbols PostgreSQL's parser saw (`||`, `->>`); empty for SQLite
    operators: tuple[str, ...] = ()

    @property
    def is_read(self) -> bool:
        return self.kind is StatementKind.SELECT
