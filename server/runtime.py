"""What a running server holds: configuration, open databases, the state store, the recorder and
the policies in service.

Built once by the app's lifespan and handed to every pipeline stage; stages read it, never rebuild
it, so per-call work stays small. `policy` is swapped by the hot-reload watcher (one reference
assignment, atomic for readers).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from server.audit.recorder import AuditRecorder
from server.config import BastionConfig, DatabaseConfig, resolve_path
from server.db.base import Database, ExecutionLimits
from server.errors import BastionError
from server.policy.engine import NoPolicyEngine, PolicyEngine
from server.policy.schema import SHIPPED_POLICIES


class UnknownDatabase(BastionError):
    code = "unknown_database"


class UnknownObject(BastionError):
    code = "not_found"


def policy_directory(config: BastionConfig) -> Path:
    return resolve_path(config, config.policies) if config.policies else SHIPPED_POLICIES


def configured_pii(config: BastionConfig, database: str) -> dict[str, str]:
    """`pii.columns` overrides that name columns of `database`, keyed "schema.table.column";
    entity NONE means "not PII" and is left out."""
    found: dict[str, str] = {}
    for key, entity in config.pii.columns.items():
        parts = key.split(".")
        if len(parts) == 4 and parts[0] == database:
            parts = parts[1:]
        if len(parts) == 3 and entity.upper() != "NONE":
            found[".".join(parts)] = entity
    return found


@dataclass
class Runtime:
    config: BastionConfig
    databases: dict[str, Database]
    recorder: AuditRecorder
    transport: str = "stdio"
    policy: PolicyEngine | NoPolicyEngine = field(default_factory=lambda: NoPolicyEngine("policies not loaded"))
    #: per database: "schema.table.column" -> PII entity
    pii: dict[str, Mapping[str, str]] = field(default_factory=dict)

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

    def pii_columns(self, database: str) -> Mapping[str, str]:
        known = self.pii.get(database)
        if known is None:
            known = self.pii[database] = configured_pii(self.config, database)
        return known

    def limits(self, name: str, *, max_rows: int | None = None) -> ExecutionLimits:
        settings = self.database_config(name)
        rows = settings.max_rows if max_rows is None else min(max_rows, settings.max_rows)
        return ExecutionLimits(
            max_rows=rows,
            max_result_bytes=settings.max_result_bytes,
            statement_timeout_ms=settings.statement_timeout_ms,
        )
