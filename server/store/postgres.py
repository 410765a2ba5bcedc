"""The PostgreSQL state store: for several server processes sharing one trail.

Linearity across processes comes from the database, not from this process: every append is one
statement, committed on its own, that locks the single row of `audit_chain_head` (`FOR UPDATE`),
reads the last sequence and hash, computes the new hash, inserts the event and moves the head. A
second writer, in this process or another, waits on the row lock and then reads the head the first
one left. Doing it in one round trip keeps the head locked only while the server works and flushes,
never while a client is on the wire. A failed append leaves the head where it was, so sequences stay
gap-free. `lock_timeout` bounds the wait, so a wedged writer makes appends fail closed, not hang.

Durability: the append returns after COMMIT, which with `synchronous_commit` on waits for the WAL
flush. A server or role configured with `synchronous_commit = off` is overridden to `on` for the
store's sessions (stronger settings, such as `remote_apply`, are left alone).

Group commit (issue 7) belongs in `append_audit`: gather the events waiting in this process and
append them with one statement (the same CTE over `unnest` of the batch, numbering them from the
head), paying one lock wait and one WAL flush for all of them.

Tables live in the first schema of the role's search_path; to keep them apart from an application's
tables, use a database of their own or add `?search_path=bastion` (a schema the role owns) to the DSN.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import asyncpg

from server.audit.chain import ChainHead
from server.audit.event import AuditEvent, StoredEvent
from server.config import redact_dsn
from server.pii.model import ColumnClassification
from server.store.base import (
    CLASSIFICATION_COLUMNS,
    StateStore,
    StoreError,
    as_utc,
    classification_from_row,
    classification_row,
    column_text,
    decode_event,
    prepare_event,
)
from server.store.migrations import LATEST_VERSION, SCHEMA_VERSION_TABLE, pending_migrations

# any constant works: advisory lock keys are per database; this one spells "bastion" in ASCII
_MIGRATION_LOCK_KEY = 0x62617374696F6E

_SERVER_SETTINGS = {
    "application_name": "bastion-state",
    # an append waits at most this long for the chain head; then it fails closed
    "lock_timeout": "10s",
    # a writer that stalls inside its transaction must not hold the head lock forever
    "idle_in_transaction_session_timeout": "60s",
}

# The whole append is this one statement (one round trip, committed on its own): lock the head row,
# link the event to it, insert it, move the head. The hash is computed here from `link_text`'s parts
# ($9 is the event's hashed JSON, ASCII only), because the head is only known once the row is locked.
# Under READ COMMITTED a writer that waited for the lock gets the head as the other writer left it; a
# stale head would collide on the sequence's primary key and fail the append, never fork the chain.
_APPEND = """
WITH head AS (
    SELECT sequence + 1 AS sequence, hash AS prev_hash
    FROM audit_chain_head WHERE id = 1
    FOR UPDATE
), linked AS (
    SELECT sequence, prev_hash,
           encode(sha256(convert_to(
               '{"event":' || $9::text || ',"prev_hash":"' || prev_hash || '","sequence":' || sequence || '}',
               'UTF8')), 'hex') AS hash
    FROM head
), inserted AS (
    INSERT INTO audit_events (sequence, id, time, agent_id, tool, decision, database, statement_kind,
                              record, prev_hash, hash)
    SELECT sequence, $1, $2, $3, $4, $5, $6, $7, $8, prev_hash, hash FROM linked
    RETURNING sequence, prev_hash, hash
)
UPDATE audit_chain_head SET sequence = inserted.sequence, hash = inserted.hash
FROM inserted WHERE audit_chain_head.id = 1
RETURNING inserted.sequence, inserted.prev_hash, inserted.hash
"""


_UPSERT_CLASSIFICATION = f"""
INSERT INTO catalog_classifications ({CLASSIFICATION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (database, schema_name, table_name, column_name) DO UPDATE SET
    entity = excluded.entity, confidence = excluded.confidence, evidence = excluded.evidence,
    source = excluded.source, fingerprint = excluded.fingerprint, classified_at = now()
"""


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset: the store changes no session state (asyncpg still rolls back an interrupted
    transaction itself), so the default `RESET ALL; UNLISTEN *; ...` round trip on every release is
    skipped; it would add a round trip to every append."""


class PostgresStore(StateStore):
    dialect = "postgres"

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._closed = False

    @classmethod
    async def open(
        cls, dsn: str, *, min_size: int = 1, max_size: int = 10, connect_timeout: float = 10.0
    ) -> PostgresStore:
        """Connect, bring the schema up to date, and check durability settings. Raises StoreError whose
        message shows the DSN only with its password replaced."""
        settings = dict(_SERVER_SETTINGS)
        pool = await _create_pool(dsn, settings, min_size, max_size, connect_timeout)
        try:
            async with pool.acquire() as conn:
                await _migrate(conn)
                synchronous_commit = await conn.fetchval("SHOW synchronous_commit")
            if synchronous_commit == "off":
                await pool.close()
                settings["synchronous_commit"] = "on"
                pool = await _create_pool(dsn, settings, min_size, max_size, connect_timeout)
        except StoreError:
            pool.terminate()
            raise
        except Exception as error:
            pool.terminate()
            raise StoreError(
                f"cannot prepare the PostgreSQL state store at {redact_dsn(dsn)}: {_describe(error)}"
            ) from None
        return cls(pool)

    async def append_audit(self, event: AuditEvent) -> StoredEvent:
        prepared = prepare_event(event)
        stored_event = prepared.event
        self._check_open()
        try:
            row = await self._pool.fetchrow(
                _APPEND,
                stored_event.id,
                stored_event.time,
                column_text(stored_event.agent_id),
                column_text(stored_event.tool),
                column_text(stored_event.decision),
                column_text(stored_event.database),
                column_text(stored_event.statement_kind),
                prepared.record_json,
                prepared.hashed_json,
            )
        except Exception as error:
            raise StoreError(f"the audit event could not be written: {_describe(error)}") from error
        if row is None:  # the head row is gone: the store was tampered with or half-migrated
            raise StoreError("the audit chain head is missing from the state store")
        return StoredEvent(sequence=int(row[0]), prev_hash=str(row[1]), hash=str(row[2]), event=stored_event)

    async def audit_chain_head(self) -> ChainHead:
        self._check_open()
        try:
            row = await self._pool.fetchrow("SELECT sequence, hash FROM audit_chain_head WHERE id = 1")
        except Exception as error:
            raise StoreError(f"the audit chain head could not be read: {_describe(error)}") from error
        return ChainHead(int(row["sequence"]), str(row["hash"]))

    async def _select_audit(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        after_sequence: int | None,
        limit: int | None,
        newest_first: bool,
    ) -> list[StoredEvent]:
        self._check_open()
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            params.append(as_utc(since))
            clauses.append(f"time >= ${len(params)}")
        if until is not None:
            params.append(as_utc(until))
            clauses.append(f"time < ${len(params)}")
        if after_sequence is not None:
            params.append(after_sequence)
            clauses.append(f"sequence > ${len(params)}")
        sql = "SELECT sequence, prev_hash, hash, record FROM audit_events"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY sequence DESC" if newest_first else " ORDER BY sequence"
        if limit is not None:
            params.append(limit)
            sql += f" LIMIT ${len(params)}"
        try:
            rows = await self._pool.fetch(sql, *params)
        except Exception as error:
            raise StoreError(f"the audit trail could not be read: {_describe(error)}") from error
        return [decode_event(row[0], row[1], row[2], row[3]) for row in rows]

    async def save_classifications(self, classifications: list[ColumnClassification]) -> None:
        if not classifications:
            return
        self._check_open()
        rows = [classification_row(c) for c in classifications]
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.executemany(_UPSERT_CLASSIFICATION, rows)
        except Exception as error:
            raise StoreError(f"the catalog classifications could not be written: {_describe(error)}") from error

    async def load_classifications(self, database: str) -> dict[tuple[str, str, str], ColumnClassification]:
        self._check_open()
        try:
            rows = await self._pool.fetch(
                f"SELECT {CLASSIFICATION_COLUMNS} FROM catalog_classifications WHERE database = $1", database
            )
        except Exception as error:
            raise StoreError(f"the catalog classifications could not be read: {_describe(error)}") from error
        loaded = (classification_from_row(row) for row in rows)
        return {c.key: c for c in loaded}

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.wait_for(self._pool.close(), timeout=10)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self._pool.terminate()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the state store is closed")


async def _create_pool(
    dsn: str, settings: dict[str, str], min_size: int, max_size: int, connect_timeout: float
) -> asyncpg.Pool:
    try:
        return await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=connect_timeout,
            command_timeout=30,
            server_settings=settings,
            reset=_keep_session,
        )
    except Exception as error:  # the driver's errors vary (OSError, PostgresError, ValueError...)
        raise StoreError(
            f"cannot connect to the PostgreSQL state store at {redact_dsn(dsn)}: {_describe(error)}"
        ) from None


async def _schema_version(conn: asyncpg.Connection) -> int:
    if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
        return 0
    return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))


async def _migrate(conn: asyncpg.Connection) -> None:
    """See server/store/migrations.py; the advisory lock makes concurrent openers take turns."""
    if await _schema_version(conn) == LATEST_VERSION:
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
        await conn.execute(SCHEMA_VERSION_TABLE["postgres"])
        for migration in pending_migrations(await _schema_version(conn)):
            for statement in migration.postgres:
                await conn.execute(statement)
            await conn.execute(
                "INSERT INTO schema_version (version, description) VALUES ($1, $2)",
                migration.version,
                migration.description,
            )


def _describe(error: BaseException) -> str:
    """What went wrong, in words that carry no secret: the server's message for its own errors (they
    name roles, databases and constraints, never passwords), the OS's for network errors, otherwise
    only the kind of error, since a client-side message may quote the DSN."""
    if isinstance(error, asyncpg.PostgresError):
        return f"{str(error) or type(error).__name__} (SQLSTATE {error.sqlstate})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, StoreError):
        return error.message
    return type(error).__name__
