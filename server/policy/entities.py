"""Cedar entities from a catalog snapshot and from the caller's identity, parsed once.

The catalog part (Database > Schema > Table > Column, with kind, tags, pii and data_type) is the
large, stable part: it is parsed into one `cedarpy.Entities` handle when the engine is bound to a
catalog and rebuilt only when the catalog or the PII classification changes. The caller (Agent
and its Groups) is a small delta added to that base with `with_added_json_str`, which clones the
base without re-parsing it; the result is cached per identity, so a warm request parses nothing.

Table tags are derived, so policies can say `resource.tags.contains("pii")` without naming
tables: the table's kind ("table", "view", ...), "pii" when any column is classified, plus the
tags the configuration gives ("schema.table" -> tags).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import cedarpy

from server.db.base import Catalog, TableInfo
from server.identity.agent import Agent

_AGENT_CACHE_SIZE = 256
AgentKey = tuple[str, tuple[str, ...], str | None, str, str]


def uid(entity_type: str, entity_id: str) -> dict[str, str]:
    return {"type": entity_type, "id": entity_id}


def agent_key(agent: Agent) -> AgentKey:
    return (agent.id, tuple(agent.groups), agent.on_behalf_of, agent.auth_method, agent.client.name or "")


def agent_entities(agent: Agent) -> list[dict[str, Any]]:
    """The Agent entity, member of its groups, and one entity per group."""
    attrs: dict[str, Any] = {"client": agent.client.name or "", "auth_method": agent.auth_method}
    if agent.on_behalf_of:
        attrs["on_behalf_of"] = agent.on_behalf_of
    groups = list(dict.fromkeys(agent.groups))
    entities = [{"uid": uid("Agent", agent.id), "attrs": attrs, "parents": [uid("Group", g) for g in groups]}]
    entities.extend({"uid": uid("Group", g), "attrs": {}, "parents": []} for g in groups)
    return entities


def normalize_pii(database: str, pii: Mapping[str, str]) -> dict[str, str]:
    """ "schema.table.column" -> entity; a "database.schema.table.column" key of this database is
    accepted too. Empty entities and "NONE" mean no PII."""
    result: dict[str, str] = {}
    prefix = f"{database}."
    for key, entity in pii.items():
        name = key[len(prefix) :] if key.startswith(prefix) and key.count(".") >= 3 else key
        if entity and entity.upper() != "NONE":
            result[name] = entity
    return result


def table_tags(info: TableInfo, pii: Mapping[str, str], configured: Iterable[str] = ()) -> list[str]:
    tags = {info.kind, *configured}
    if any(f"{info.qualified}.{column.name}" in pii for column in info.columns):
        tags.add("pii")
    return sorted(tags)


class CatalogEntities:
    """One database's catalog as a parsed Cedar entity set, plus cached per-caller views of it."""

    def __init__(
        self,
        database: str,
        catalog: Catalog,
        pii: Mapping[str, str],
        tags: Mapping[str, Iterable[str]],
        schema: cedarpy.Schema | None,
    ) -> None:
        self.database = database
        self.catalog = catalog
        self._given = (pii, tags)
        self.pii = normalize_pii(database, pii)
        self.tags = {name: tuple(values) for name, values in tags.items()}
        self.schema = schema
        documents = list(self._documents())
        self.ids: frozenset[tuple[str, str]] = frozenset((d["uid"]["type"], d["uid"]["id"]) for d in documents)
        #: "schema.table.column" of every catalog column
        self.column_ids: frozenset[str] = frozenset(
            f"{info.qualified}.{column.name}" for info in catalog.tables.values() for column in info.columns
        )
        self.base = cedarpy.Entities.from_json_str(json.dumps(documents), schema)
        self._views: OrderedDict[tuple[AgentKey, str], cedarpy.Entities] = OrderedDict()

    def same_inputs(self, catalog: Catalog, pii: Mapping[str, str], tags: Mapping[str, Iterable[str]]) -> bool:
        """Whether these are the inputs this set was built from: the same objects (a dictionary
        lookup's cost, so a server may call `bind` on every request) or equal ones."""
        if catalog is self.catalog and pii is self._given[0] and tags is self._given[1]:
            return True
        if self.pii != normalize_pii(self.database, pii):
            return False
        if self.tags != {name: tuple(values) for name, values in tags.items()}:
            return False
        return catalog is self.catalog or catalog == self.catalog

    def _documents(self) -> Iterable[dict[str, Any]]:
        database = self.database
        yield {"uid": uid("Database", database), "attrs": {}, "parents": []}
        schemas = {schema for schema, _ in self.catalog.tables} | set(self.catalog.schemas)
        for schema in sorted(schemas):
            yield {"uid": uid("Schema", f"{database}.{schema}"), "attrs": {}, "parents": [uid("Database", database)]}
        for info in self.catalog.tables.values():
            table_id = f"{database}.{info.qualified}"
            yield {
                "uid": uid("Table", table_id),
                "attrs": {"kind": info.kind, "tags": table_tags(info, self.pii, self.tags.get(info.qualified, ()))},
                "parents": [uid("Schema", f"{database}.{info.schema}")],
            }
            for column in info.columns:
                name = f"{info.qualified}.{column.name}"
                yield {
                    "uid": uid("Column", f"{table_id}.{column.name}"),
                    "attrs": {"pii": self.pii.get(name, ""), "data_type": column.data_type},
                    "parents": [uid("Table", table_id)],
                }

    def table(self, qualified: str) -> TableInfo | None:
        schema, _, name = qualified.rpartition(".")
        return self.catalog.tables.get((schema, name))

    def for_caller(self, agent: Agent, extra: tuple[dict[str, Any], ...] = ()) -> cedarpy.Entities:
        """The base plus the agent, its groups and `extra` entities (resources the catalog does
        not hold yet, e.g. the table a CREATE TABLE names), cached per identity."""
        key = (agent_key(agent), json.dumps(extra) if extra else "")
        view = self._views.get(key)
        if view is not None:
            self._views.move_to_end(key)
            return view
        delta = agent_entities(agent) + [e for e in extra if (e["uid"]["type"], e["uid"]["id"]) not in self.ids]
        view = self.base.with_added_json_str(json.dumps(delta))
        self._views[key] = view
        if len(self._views) > _AGENT_CACHE_SIZE:
            self._views.popitem(last=False)
        return view

    def missing(self, entity_type: str, entity_id: str, pii: str = "") -> tuple[dict[str, Any], ...]:
        """Entities to add so that an unknown resource still sits in its hierarchy (a policy on its
        schema or database then applies to it): nothing when the catalog knows it."""
        if (entity_type, entity_id) in self.ids or entity_type == "Database":
            return ()
        parent_type = {"Column": "Table", "Table": "Schema", "Schema": "Database"}[entity_type]
        parent_id = entity_id.rpartition(".")[0] or self.database
        if entity_type == "Column":
            attrs: dict[str, Any] = {"pii": pii, "data_type": ""}
        elif entity_type == "Table":
            attrs = {"kind": "table", "tags": ["pii"] if pii else []}
        else:
            attrs = {}
        own = {"uid": uid(entity_type, entity_id), "attrs": attrs, "parents": [uid(parent_type, parent_id)]}
        return (own, *self.missing(parent_type, parent_id))
