"""What a running server holds: configuration, open databases, the state store and the recorder.

Built once by the app's lifespan and handed to every pipeline stage; stages read it, never rebuild
it, so per-call work stays small.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.audit.recorder import AuditRecorder
from server.config import BastionConfig, DatabaseConfig
from server.db.base import Database, ExecutionLimits
from server.errors import BastionError


class UnknownDatabase(BastionError):
    code = "unknown_database"


class UnknownObject(BastionError):
    code = "not_found"


@dataclass
class Runtime:
    config: BastionConfig
    databases: dict[str, Database]
    recorder: AuditRecorder
    transport: str = "stdio"

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

    def limits(self, name: str, *, max_rows: int | None = None) -> ExecutionLimits:
        settings = self.database_config(name)
        rows = settings.max_rows if max_rows is None else min(max_rows, settings.max_rows)
        return ExecutionLimits(
            max_rows=rows,
            max_result_bytes=settings.max_result_bytes,
            statement_timeout_ms=settings.statement_timeout_ms,
        )
