"""Database backends: PostgreSQL (asyncpg) and SQLite (the embedded demo), behind `base.Database`.

`open_database` chooses the backend by the DSN's scheme and returns it unopened: the caller awaits
`open()` where it can report a start-up failure (the application's lifespan).
"""

from __future__ import annotations

from pathlib import Path

from server.config import DatabaseConfig
from server.db.base import Database
from server.errors import ConfigError

__all__ = ["open_database", "sqlite_file"]


def sqlite_file(dsn: str, base_dir: str) -> Path:
    """`sqlite:///relative.db` is relative to `base_dir` (the config file's folder);
    `sqlite:////abs/path.db` is absolute. Query parameters are refused rather than ignored, so
    nobody believes `?mode=rw` or `?immutable=1` did something."""
    path = dsn.removeprefix("sqlite:///")
    if "?" in path or "#" in path:
        raise ConfigError("a sqlite:/// DSN takes a file path only, without ?parameters")
    if not path or path == ":memory:":
        raise ConfigError("a sqlite:/// DSN must name a database file")
    candidate = Path(path)
    return candidate if candidate.is_absolute() else Path(base_dir) / candidate


def open_database(name: str, config: DatabaseConfig, *, base_dir: str) -> Database:
    """The backend for one configured database (not yet opened)."""
    if config.dsn.startswith("sqlite:"):
        from server.db.sqlite import SqliteDatabase

        try:
            path = sqlite_file(config.dsn, base_dir)
        except ConfigError as error:
            raise ConfigError(f"databases.{name}.dsn: {error.message}") from None
        return SqliteDatabase(name, config, path=path)
    from server.db.postgres import PostgresDatabase

    return PostgresDatabase(name, config)
