"""Map the tables a statement names onto the catalog, as the database would resolve them.

Authorization is about resources that exist: a table the catalog does not know is refused here with
a pointer to `describe`, and system relations (which expose other sessions' queries, roles and
settings) are refused unless the configuration lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.db.base import Catalog, TableInfo
from server.errors import PolicyDenied
from server.sql.statement import Statement, StatementKind, TableRef

_PG_SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})
_SQLITE_SYSTEM_TABLES = frozenset(
    {"sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema", "sqlite_sequence"}
)


@dataclass(frozen=True)
class ResolvedTable:
    ref: TableRef
    info: TableInfo | None  # None for an allowed system relation

    @property
    def qualified(self) -> str:
        return self.info.qualified if self.info else self.ref.qualified


def is_system_relation(ref: TableRef, dialect: str) -> bool:
    schema = (ref.schema or "").lower()
    name = ref.name.lower()
    if dialect == "sqlite":
        return name in _SQLITE_SYSTEM_TABLES or name.startswith(("sqlite_", "pragma_")) or schema == "temp"
    # PostgreSQL searches pg_catalog before the search_path, so an unqualified pg_* name is the
    # system relation whatever the user schemas hold.
    return schema in _PG_SYSTEM_SCHEMAS or schema.startswith("pg_") or (not ref.schema and name.startswith("pg_"))


def resolve_tables(
    statement: Statement, catalog: Catalog, *, allowed_system_relations: tuple[str, ...] = ()
) -> tuple[ResolvedTable, ...]:
    allowed = {name.lower() for name in allowed_system_relations}
    resolved: list[ResolvedTable] = []
    for ref in statement.tables:
        if is_system_relation(ref, catalog.dialect):
            if ref.qualified.lower() in allowed or ref.name.lower() in allowed:
                resolved.append(ResolvedTable(ref, None))
                continue
            raise PolicyDenied(
                f"system relation {ref.qualified} is not readable through Bastion.",
                hint="Call describe to learn the schema; an operator can allow it under "
                "databases.<name>.allowed_system_relations.",
                policy_ids=("bastion:system-relations",),
            )
        info = catalog.find(ref.name, ref.schema)
        if info is None and statement.kind is StatementKind.DDL:
            # a statement that creates a relation names one that does not exist yet: policy decides
            # on the `ddl` action for it, in the schema it would be created in
            schema = ref.schema or (catalog.search_path[0] if catalog.search_path else None)
            resolved.append(ResolvedTable(TableRef(ref.name, schema), None))
            continue
        if info is None:
            where = f"schema {ref.schema}" if ref.schema else "the search path " + ", ".join(catalog.search_path)
            raise PolicyDenied(
                f"table {ref.qualified} does not exist in database {catalog.database} ({where}).",
                hint="Call describe to list the tables you can query.",
                policy_ids=("bastion:unknown-table",),
            )
        resolved.append(ResolvedTable(ref, info))
        # a read of a parent reads its inheritance children and partitions too (without ONLY, and
        # Bastion does not rely on ONLY): policy is asked about each of them
        for schema, name in catalog.descendants(info.schema, info.name):
            child = catalog.tables.get((schema, name))
            if child is not None:
                resolved.append(ResolvedTable(TableRef(name, schema), child))
    return tuple(dict.fromkeys(resolved))
