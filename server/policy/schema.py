"""The Cedar schema policies are validated against: a static part plus what the catalog holds.

The static part (`policies/bastion.cedarschema`) fixes the entity types, actions and context, the
contract between Bastion (which builds entities and requests) and policy authors. It ships with
Bastion and is not read from the operator's policy directory: the engine fills exactly these
attributes, so a schema edited elsewhere would only validate policies against entities that never
exist. Cedar schemas describe types, not instances, so the catalog's part is the list of entity
ids that exist (checked by `bastion policy validate` for every literal a policy names) and is
printed after the static text by `bastion policy schema`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path

import cedarpy

from server.db.base import Catalog
from server.policy.errors import PolicyError, PolicyProblem

#: the shipped policies: default.cedar, examples/, tests/ and the static schema
SHIPPED_POLICIES = Path(__file__).resolve().parents[2] / "policies"
STATIC_SCHEMA_PATH = SHIPPED_POLICIES / "bastion.cedarschema"

#: actions whose resource is a table (one request per table a statement touches)
TABLE_ACTIONS: tuple[str, ...] = ("select", "insert", "update", "delete", "ddl", "admin", "describe")
#: every action of the static schema
ACTIONS: tuple[str, ...] = (*TABLE_ACTIONS, "read_unmasked", "approve")
#: the attributes of RequestContext, in the order of the schema
CONTEXT_ATTRIBUTES: tuple[str, ...] = (
    "purpose",
    "approved",
    "tool",
    "transport",
    "row_limit",
    "statement_kind",
    "pii_entities",
    "hour_utc",
)


def static_schema_text() -> str:
    try:
        return STATIC_SCHEMA_PATH.read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(
            [PolicyProblem(str(STATIC_SCHEMA_PATH), 0, 0, f"cannot read the Cedar schema: {error.strerror}")]
        ) from None


@lru_cache(maxsize=1)
def static_schema() -> cedarpy.Schema:
    """The static schema, parsed once per process."""
    try:
        return cedarpy.Schema.from_str(static_schema_text())
    except ValueError as error:
        raise PolicyError([PolicyProblem(str(STATIC_SCHEMA_PATH), 0, 0, f"invalid Cedar schema: {error}")]) from None


def render_schema(catalogs: Mapping[str, Catalog] = {}, pii: Mapping[str, Mapping[str, str]] = {}) -> str:
    """The static schema followed, per database, by the entity ids the catalog provides (as Cedar
    comments, since a schema cannot hold instances): what `bastion policy schema` prints."""
    lines = [static_schema_text().rstrip(), ""]
    for database, catalog in catalogs.items():
        lines.append(f"// ---- entities of database {database!r} ({catalog.dialect}), from its catalog ----")
        lines.append(f'// Database::"{database}"')
        classified = pii.get(database, {})
        for schema_name in sorted({schema for schema, _ in catalog.tables} | set(catalog.schemas)):
            lines.append(f'//   Schema::"{database}.{schema_name}"')
            for (schema, _), info in sorted(catalog.tables.items()):
                if schema != schema_name:
                    continue
                lines.append(f'//     Table::"{database}.{info.qualified}"  ({info.kind})')
                for column in info.columns:
                    entity = classified.get(f"{info.qualified}.{column.name}", "")
                    note = f", pii {entity}" if entity else ""
                    lines.append(
                        f'//       Column::"{database}.{info.qualified}.{column.name}"  ({column.data_type}{note})'
                    )
        lines.append("")
    return "\n".join(lines)


def entity_ids(database: str, catalog: Catalog) -> Iterable[tuple[str, str]]:
    """(entity type, id) of every catalog entity of `database`."""
    yield "Database", database
    for schema in sorted({schema for schema, _ in catalog.tables} | set(catalog.schemas)):
        yield "Schema", f"{database}.{schema}"
    for info in catalog.tables.values():
        yield "Table", f"{database}.{info.qualified}"
        for column in info.columns:
            yield "Column", f"{database}.{info.qualified}.{column.name}"
