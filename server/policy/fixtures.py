"""A catalog written in YAML, so policies can be tested and explained without a live database.

Policy test files (`policies/tests/*.yaml`) and `bastion policy explain --catalog FILE` describe
the database like this:

    catalog:
      database: main                 # the configured database name (entity ids start with it)
      dialect: postgres              # or sqlite
      search_path: [public]          # optional
      tables:
        sales.customers:
          tags: [gdpr]               # optional, added to the derived tags
          columns:
            id: integer
            email: {type: text, pii: EMAIL_ADDRESS}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from server.db.base import Catalog, ColumnInfo, TableInfo
from server.errors import ConfigError

_KINDS = ("table", "view", "materialized_view", "foreign_table")


@dataclass(frozen=True)
class CatalogFixture:
    database: str
    catalog: Catalog
    #: "schema.table.column" -> PII entity
    pii: Mapping[str, str] = field(default_factory=dict)
    #: "schema.table" -> configured tags
    tags: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: not valid YAML") from None


def load_catalog_file(path: Path) -> CatalogFixture:
    data = read_yaml(path)
    if isinstance(data, dict) and "catalog" in data:
        data = data["catalog"]
    return parse_catalog(data, source=str(path))


def parse_catalog(data: Any, *, source: str) -> CatalogFixture:
    """The fixture from its YAML mapping; ConfigError names `source` and the key at fault."""

    def fail(where: str, message: str) -> ConfigError:
        return ConfigError(f"{source}: catalog.{where}: {message}")

    if not isinstance(data, dict):
        raise ConfigError(f"{source}: catalog must be a mapping with database, dialect and tables")
    unknown = set(data) - {"database", "dialect", "search_path", "tables"}
    if unknown:
        raise fail(sorted(unknown)[0], "unknown key")
    database = data.get("database")
    if not isinstance(database, str) or not database:
        raise fail("database", "required: the configured database name, e.g. main")
    dialect = data.get("dialect", "postgres")
    if dialect not in ("postgres", "sqlite"):
        raise fail("dialect", "must be postgres or sqlite")
    default_path = ["main"] if dialect == "sqlite" else ["public"]
    search_path = data.get("search_path", default_path)
    if not isinstance(search_path, list) or not all(isinstance(s, str) for s in search_path):
        raise fail("search_path", "must be a list of schema names")
    tables_data = data.get("tables")
    if not isinstance(tables_data, dict) or not tables_data:
        raise fail("tables", "required: a mapping of schema.table to its columns")
    tables: dict[tuple[str, str], TableInfo] = {}
    pii: dict[str, str] = {}
    tags: dict[str, tuple[str, ...]] = {}
    for qualified, spec in tables_data.items():
        schema, dot, name = str(qualified).rpartition(".")
        if not dot or not schema or not name:
            raise fail(f"tables.{qualified}", "name tables as schema.table")
        spec = spec or {}
        if not isinstance(spec, dict) or not isinstance(spec.get("columns"), dict) or not spec["columns"]:
            raise fail(f"tables.{qualified}", "needs columns: a mapping of column name to type")
        unknown = set(spec) - {"columns", "kind", "tags"}
        if unknown:
            raise fail(f"tables.{qualified}.{sorted(unknown)[0]}", "unknown key")
        kind = spec.get("kind", "table")
        if kind not in _KINDS:
            raise fail(f"tables.{qualified}.kind", f"must be one of {', '.join(_KINDS)}")
        columns: list[ColumnInfo] = []
        for column, column_spec in spec["columns"].items():
            if isinstance(column_spec, str):
                data_type, entity = column_spec, None
            elif isinstance(column_spec, dict) and set(column_spec) <= {"type", "pii"}:
                data_type, entity = str(column_spec.get("type", "text")), column_spec.get("pii")
            else:
                raise fail(f"tables.{qualified}.columns.{column}", "a type name, or {type: ..., pii: ...}")
            columns.append(ColumnInfo(name=str(column), data_type=data_type, nullable=True))
            if entity:
                pii[f"{qualified}.{column}"] = str(entity)
        tables[(schema, name)] = TableInfo(schema=schema, name=name, kind=kind, columns=tuple(columns))
        if spec.get("tags"):
            tags[str(qualified)] = tuple(str(t) for t in spec["tags"])
    schemas = tuple(sorted({schema for schema, _ in tables}))
    catalog = Catalog(
        database=database, dialect=dialect, tables=tables, search_path=tuple(search_path), schemas=schemas
    )
    return CatalogFixture(database=database, catalog=catalog, pii=pii, tags=tags)
