"""The state store: audit trail now, approvals and the catalog's classifications later.

`open_state_store(config.state.dsn, base_dir=config.base_dir)` is the one way in; the backend is
chosen by the DSN's scheme, and the returned store has already brought its schema up to date.
"""

from __future__ import annotations

from pathlib import Path

from server.errors import ConfigError
from server.store.base import StateStore, StoreError

__all__ = ["StateStore", "StoreError", "open_state_store", "sqlite_file"]


def sqlite_file(dsn: str, base_dir: str) -> Path:
    """`sqlite:///relative/state.db` is relative to `base_dir` (the config file's folder);
    `sqlite:////abs/state.db` is absolute. An in-memory store would lose the trail, so it is refused."""
    name = dsn.removeprefix("sqlite:///")
    if not name or name == ":memory:" or name.startswith("file:"):
        raise ConfigError("state.dsn: name a file for the SQLite state store (sqlite:///path/to/state.db)")
    if "?" in name:
        raise ConfigError("state.dsn: a SQLite state store takes no query parameters")
    path = Path(name)
    return path if path.is_absolute() else Path(base_dir) / path


async def open_state_store(dsn: str, *, base_dir: str) -> StateStore:
    """Open (creating if need be) the store `dsn` names. Raises ConfigError for a DSN of the wrong
    form and StoreError when the store cannot be reached or prepared; neither message shows a password."""
    if dsn.startswith("sqlite:///"):
        from server.store.sqlite import SQLiteStore

        return await SQLiteStore.open(sqlite_file(dsn, base_dir))
    if dsn.startswith(("postgresql://", "postgres://")):
        # imported here so a SQLite-only server does not pay for loading asyncpg's pool at start
        from server.store.postgres import PostgresStore

        return await PostgresStore.open(dsn)
    scheme = dsn.split("://", 1)[0] if "://" in dsn else "(none)"
    raise ConfigError(f"state.dsn: unsupported scheme {scheme!r}; use sqlite:/// or postgresql://")
