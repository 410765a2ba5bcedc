"""The state store's schema, as numbered migrations applied on open.

Opening a store reads `schema_version` first; only when migrations are pending does it take a lock
(PostgreSQL an advisory lock, SQLite its write lock), read the version again and apply what is still
missing, all in one transaction, recording each version. So several processes opening a fresh store
at once apply each migration exactly once, and a store that is already current can be opened by a role
that may read and write the tables but not create them. Migrations are append-only: a released one is
never edited, a change is a new version.

Later issues add their tables as new versions here: `catalog_classifications` (version 2: each
column's PII entity, confidence and evidence) and `approvals` (version 3: the approval requests and
their decisions; PostgreSQL stores also announce decisions on the `bastion_approvals` channel with
NOTIFY, see server/store/postgres.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from server.store.base import StoreError


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    postgres: tuple[str, ...]
    sqlite: tuple[str, ...]


SCHEMA_VERSION_TABLE = {
    "postgres": (
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version integer PRIMARY KEY,"
        " description text NOT NULL,"
        " applied_at timestamptz NOT NULL DEFAULT now())"
    ),
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY,"
        " description TEXT NOT NULL,"
        " applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
    ),
}

_GENESIS = "'" + "0" * 64 + "'"

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="audit trail and its chain head",
        postgres=(
            # sequence is assigned by the append under the chain-head lock, not by a PostgreSQL
            # sequence: those leave gaps on rollback, and a gap must mean a deleted event
            """CREATE TABLE audit_events (
                sequence bigint PRIMARY KEY CHECK (sequence > 0),
                id text NOT NULL UNIQUE,
                time timestamptz NOT NULL,
                agent_id text,
                tool text NOT NULL,
                decision text NOT NULL,
                database text,
                statement_kind text,
                record text NOT NULL,
                prev_hash text NOT NULL,
                hash text NOT NULL)""",
            "CREATE INDEX audit_events_time_idx ON audit_events (time)",
            # one row, locked by every append: the point where concurrent writers are serialized
            """CREATE TABLE audit_chain_head (
                id smallint PRIMARY KEY CHECK (id = 1),
                sequence bigint NOT NULL,
                hash text NOT NULL)""",
            f"INSERT INTO audit_chain_head (id, sequence, hash) VALUES (1, 0, {_GENESIS})",
        ),
        sqlite=(
            # time is UTC text of fixed width (2026-07-28T14:03:07.000123Z) so text order is time order
            """CREATE TABLE audit_events (
                sequence INTEGER PRIMARY KEY CHECK (sequence > 0),
                id TEXT NOT NULL UNIQUE,
                time TEXT NOT NULL,
                agent_id TEXT,
                tool TEXT NOT NULL,
                decision TEXT NOT NULL,
                database TEXT,
                statement_kind TEXT,
                record TEXT NOT NULL,
                prev_hash TEXT NOT NULL,
                hash TEXT NOT NULL)""",
            "CREATE INDEX audit_events_time_idx ON audit_events (time)",
            """CREATE TABLE audit_chain_head (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                sequence INTEGER NOT NULL,
                hash TEXT NOT NULL)""",
            f"INSERT INTO audit_chain_head (id, sequence, hash) VALUES (1, 0, {_GENESIS})",
        ),
    ),
    Migration(
        version=2,
        description="catalog classifications: each column's PII entity, confidence and evidence",
        postgres=(
            # one row per column of a configured database; fingerprint identifies the column's
            # definition when it was classified (a changed column is classified again)
            """CREATE TABLE catalog_classifications (
                database text NOT NULL,
                schema_name text NOT NULL,
                table_name text NOT NULL,
                column_name text NOT NULL,
                entity text,
                confidence double precision NOT NULL,
                evidence text NOT NULL,
                source text NOT NULL,
                fingerprint text NOT NULL,
                classified_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (database, schema_name, table_name, column_name))""",
        ),
        sqlite=(
            """CREATE TABLE catalog_classifications (
                database TEXT NOT NULL,
                schema_name TEXT NOT NULL,
                table_name TEXT NOT NULL,
                column_name TEXT NOT NULL,
                entity TEXT,
                confidence REAL NOT NULL,
                evidence TEXT NOT NULL,
                source TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                classified_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                PRIMARY KEY (database, schema_name, table_name, column_name))""",
        ),
    ),
    Migration(
        version=3,
        description="approvals: each request for a human to agree to one statement, and its decision",
        postgres=(
            # status is what was stored (pending, approved, denied, used); "expired" is read off
            # expires_at. tables, policy_ids and reasons are JSON arrays in `details`.
            """CREATE TABLE approvals (
                id text PRIMARY KEY,
                created_at timestamptz NOT NULL,
                expires_at timestamptz NOT NULL,
                database text NOT NULL,
                agent_id text NOT NULL,
                on_behalf_of text,
                statement text NOT NULL,
                fingerprint text NOT NULL,
                statement_kind text NOT NULL,
                justification text NOT NULL,
                policy_version text NOT NULL,
                mode text NOT NULL,
                status text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used')),
                decided_by text,
                decided_at timestamptz,
                decision_reason text,
                decided_via text,
                used_at timestamptz,
                details text NOT NULL)""",
            "CREATE INDEX approvals_status_idx ON approvals (status, created_at)",
        ),
        sqlite=(
            # times are UTC text of fixed width, as in audit_events, so text order is time order
            """CREATE TABLE approvals (
                id TEXT PRIMARY KEY,
                created_at TEXT NOT NULL,
                expires_at TEXT NOT NULL,
                database TEXT NOT NULL,
                agent_id TEXT NOT NULL,
                on_behalf_of TEXT,
                statement TEXT NOT NULL,
                fingerprint TEXT NOT NULL,
                statement_kind TEXT NOT NULL,
                justification TEXT NOT NULL,
                policy_version TEXT NOT NULL,
                mode TEXT NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used')),
                decided_by TEXT,
                decided_at TEXT,
                decision_reason TEXT,
                decided_via TEXT,
                used_at TEXT,
                details TEXT NOT NULL)""",
            "CREATE INDEX approvals_status_idx ON approvals (status, created_at)",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def pending_migrations(current: int) -> tuple[Migration, ...]:
    """The migrations a store at `current` still needs; refuses a store written by a newer Bastion,
    whose tables this one would misread."""
    if current > LATEST_VERSION:
        raise StoreError(
            f"the state store has schema version {current}, newer than this Bastion knows "
            f"({LATEST_VERSION}); upgrade Bastion or point state.dsn at another store"
        )
    return tuple(m for m in MIGRATIONS if m.version > current)
