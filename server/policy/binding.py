"""Policies bound to one database's catalog: its entities, and the checks that need the catalog.

Two things in a policy can only be checked against a catalog: the entities it names
(`Table::"main.sales.custmers"` is valid Cedar that silently matches nothing) and the columns its
row filters name. Both are checked when the engine is bound, and reported as problems with the
policy's location. A row filter that cannot apply to a table it would govern is also remembered,
so that `authorize` refuses the read instead of running it unfiltered (fail closed).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import cedarpy

from server.db.base import Catalog, TableInfo
from server.policy.entities import CatalogEntities
from server.policy.errors import PolicyProblem
from server.policy.loader import PolicyInfo
from server.sql.row_filters import RowFilterError, check_predicate

_CATALOG_TYPES = ("Database", "Schema", "Table", "Column")


class Binding:
    """One database: its catalog entities and the row-filter verdicts per (policy, table)."""

    def __init__(
        self,
        database: str,
        catalog: Catalog,
        pii: Mapping[str, str],
        tags: Mapping[str, Iterable[str]],
        schema: cedarpy.Schema | None,
        policies: Mapping[str, PolicyInfo],
    ) -> None:
        self.database = database
        self.entities = CatalogEntities(database, catalog, pii, tags, schema)
        self._policies = policies
        #: (policy id, "schema.table") -> why its row filter cannot apply there (None: it can)
        self.filter_failures: dict[tuple[str, str], str | None] = {}
        self.problems: tuple[PolicyProblem, ...] = tuple(self._check())

    @property
    def catalog(self) -> Catalog:
        return self.entities.catalog

    def filter_failure(self, policy_id: str, qualified: str) -> str | None:
        """Why the row filter of `policy_id` cannot apply to table `qualified`, else None. Tables
        checked at bind are looked up; others (outside the catalog) are checked now."""
        key = (policy_id, qualified)
        if key in self.filter_failures:
            return self.filter_failures[key]
        info = self.entities.table(qualified)
        policy = self._policies.get(policy_id)
        if policy is None or policy.obligations.row_filter is None:
            return None
        if info is None:
            failure: str | None = f"table {qualified} is not in the catalog, so its row filter cannot be checked"
        else:
            failure = _filter_error(policy, info, self.catalog.dialect)
        self.filter_failures[key] = failure
        return failure

    def _check(self) -> Iterator[PolicyProblem]:
        for policy in self._policies.values():
            yield from self._check_literals(policy)
            if policy.obligations.row_filter is not None:
                yield from self._check_row_filter(policy)

    def _check_literals(self, policy: PolicyInfo) -> Iterator[PolicyProblem]:
        prefix = f"{self.database}."
        for literal in policy.literals:
            if literal.type not in _CATALOG_TYPES:
                continue
            if literal.id != self.database and not literal.id.startswith(prefix):
                continue  # another database's entity
            if (literal.type, literal.id) not in self.entities.ids:
                yield PolicyProblem(
                    policy.file,
                    literal.line,
                    literal.column,
                    f'{literal.type}::"{literal.id}" is not in the catalog of database {self.database}',
                )

    def _check_row_filter(self, policy: PolicyInfo) -> Iterator[PolicyProblem]:
        tables = list(self._candidates(policy.resource_scope))
        failures: list[str] = []
        for info in tables:
            failure = _filter_error(policy, info, self.catalog.dialect)
            self.filter_failures[(policy.id, info.qualified)] = failure
            if failure is not None:
                failures.append(failure)
        named_one = policy.resource_scope.get("op") == "==" and len(tables) == 1
        # a filter scoped to one table must fit it; a broad one must fit at least one table it
        # governs (tables it does not fit are refused at request time)
        if failures and (named_one or len(failures) == len(tables)):
            line, column = policy.annotation_locations.get("row_filter", (policy.line, policy.column))
            yield PolicyProblem(policy.file, line, column, failures[0])

    def _candidates(self, scope: Mapping[str, Any]) -> Iterator[TableInfo]:
        """The catalog tables a resource scope can match (conditions are not evaluated)."""
        op = scope.get("op")
        container: Mapping[str, Any] | None
        if op in ("==", "in"):
            container = scope.get("entity")
        elif op == "is":
            if scope.get("entity_type") != "Table":
                return
            container = (scope.get("in") or {}).get("entity")
        else:
            container = None
        for info in self.catalog.tables.values():
            if container is None or _contains(container, self.database, info, exact=op == "=="):
                yield info


def _contains(container: Mapping[str, Any], database: str, info: TableInfo, *, exact: bool) -> bool:
    kind, entity_id = container.get("type"), container.get("id")
    if kind == "Table":
        return entity_id == f"{database}.{info.qualified}"
    if exact:
        return False  # a table is never == a schema or a database
    if kind == "Schema":
        return entity_id == f"{database}.{info.schema}"
    return kind == "Database" and entity_id == database


def _filter_error(policy: PolicyInfo, info: TableInfo, dialect: str) -> str | None:
    assert policy.obligations.row_filter is not None
    try:
        check_predicate(policy.obligations.row_filter, dialect=dialect, table=info)
    except RowFilterError as error:
        return str(error)
    return None
