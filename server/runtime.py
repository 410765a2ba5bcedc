"""What a running server holds: configuration, open databases, the state store, the recorder and
the policies in service.

Built once by the app's lifespan and handed to every pipeline stage; stages read it, never rebuild
it, so per-call work stays small. `policy` is swapped by the hot-reload watcher (one reference
assignment, atomic for readers).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from server.audit.recorder import AuditRecorder
from server.config import BastionConfig, DatabaseConfig, resolve_path
from server.db.base import Catalog, Database, ExecutionLimits
from server.errors import BastionError
from server.pii.catalog_scan import classify_catalog
from server.pii.mask import Masker
from server.policy.engine import NoPolicyEngine, PolicyEngine
from server.policy.schema import SHIPPED_POLICIES
from server.sql.analyzer import analyze
from server.sql.lineage import lineage
from server.store import StateStore
from server.telemetry import Telemetry


class UnknownDatabase(BastionError):
    code = "unknown_database"


class UnknownObject(BastionError):
    code = "not_found"


def policy_directory(config: BastionConfig) -> Path:
    return resolve_path(config, config.policies) if config.policies else SHIPPED_POLICIES


def view_pii(catalog: Catalog, pii: Mapping[str, str]) -> dict[str, str]:
    """A view's column carries the PII of the base columns it is computed from, whatever it is
    called (`full_name AS label`): its definition is traced like a query. A definition Bastion
    cannot analyze leaves the view's own classification."""
    found: dict[str, str] = {}
    for info in catalog.tables.values():
        if not info.definition:
            continue
        try:
            statement = analyze(info.definition.strip().rstrip(";"), catalog.dialect)
        except BastionError:
            continue
        traced = lineage(statement, catalog)
        if not traced.exact or len(traced.columns) != len(info.columns):
            continue
        for column, output in zip(info.columns, traced.columns, strict=True):
            key = f"{info.qualified}.{column.name}"
            entities = [pii[source] for source in sorted(output.revealed) if pii.get(source)]
            if entities and key not in pii:
                found[key] = entities[0]
    return found


@dataclass
class Runtime:
    config: BastionConfig
    databases: dict[str, Database]
    recorder: AuditRecorder
    transport: str = "stdio"
    policy: PolicyEngine | NoPolicyEngine = field(default_factory=lambda: NoPolicyEngine("policies not loaded"))
    masker: Masker | None = None
    telemetry: Telemetry = field(default_factory=Telemetry)
    store: StateStore | None = None
    #: per database: the catalog snapshot classified, and "schema.table.column" -> PII entity
    pii: dict[str, tuple[Catalog, Mapping[str, str]]] = field(default_factory=dict)
    _pii_locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def database_name(self, requested: str | None) -> str:
        name = requested or self.config.default_database
        if name not in self.databases:
            known = ", ".join(sorted(self.databases))
            raise UnknownDatabase(f"database {name!r} is not configured.", hint=f"Use one of: {known} (or omit it).")
        return name

    def database(self, name: str) -> Database:
        return self.databases[self.database_name(name)]

    def database_config(self, name: str) -> DatabaseConfig:
        return self.config.databases[self.database_name(name)]

    async def pii_columns(self, database: str) -> Mapping[str, str]:
        """Every PII column of `database` ("schema.table.column" -> entity, FREE_TEXT included):
        classified once per catalog snapshot (stored results reused, new columns sampled), with the
        `pii.columns` overrides applied."""
        name = self.database_name(database)
        catalog = await self.database(name).catalog()
        known = self.pii.get(name)
        if known is not None and known[0] is catalog:
            return known[1]
        lock = self._pii_locks.setdefault(name, asyncio.Lock())
        async with lock:
            known = self.pii.get(name)
            if known is not None and known[0] is catalog:
                return known[1]
            classified = await classify_catalog(
                self.database(name), catalog, self.config.pii, self.store, base_dir=self.config.base_dir
            )
            mapping = {
                f"{schema}.{table}.{column}": found.entity
                for (schema, table, column), found in classified.items()
                if found.entity
            }
            mapping.update(view_pii(catalog, mapping))
            self.pii[name] = (catalog, mapping)
            return mapping

    def limits(self, name: str, *, max_rows: int | None = None) -> ExecutionLimits:
        settings = self.database_config(name)
        rows = settings.max_rows if max_rows is None else min(max_rows, settings.max_rows)
        return ExecutionLimits(
            max_rows=rows,
            max_result_bytes=settings.max_result_bytes,
            statement_timeout_ms=settings.statement_timeout_ms,
        )
