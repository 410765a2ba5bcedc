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

Group commit: `append_audit` queues the event (`GroupCommit` in base.py) and one flusher per process
appends everything waiting with the same kind of single statement over arrays of the batch: a
recursive CTE numbers and links the events from the locked head in order, so a batch pays one lock
wait, one round trip and one WAL flush for all the calls that arrived while the previous one was
flushing. Processes still take turns on the head row, so the chain stays one line.

Tables live in the first schema of the role's search_path; to keep them apart from an application's
tables, use a database of their own or add `?search_path=bastion` (a schema the role owns) to the DSN.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from server.approvals.model import Approval
from server.audit.chain import ChainHead
from server.audit.event import AuditEvent, StoredEvent
from server.config import redact_dsn
from server.pii.model import ColumnClassification
from server.store.base import (
    APPROVAL_COLUMNS,
    APPROVALS_CHANNEL,
    CLASSIFICATION_COLUMNS,
    ApprovalListener,
    GroupCommit,
    PreparedEvent,
    StateStore,
    StoreError,
    approval_from_row,
    approval_row,
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

# The whole append of a batch is this one statement (one round trip, committed on its own): lock the
# head row, link the events to it in order, insert them, move the head. Each hash is computed here
# from `link_text`'s parts (`record` is the event's hashed JSON, ASCII only), because the head is only
# known once the row is locked; the recursive CTE carries each event's hash to the next. Under READ
# COMMITTED a writer that waited for the lock gets the head as the other writer left it; a stale head
# would collide on the sequence's primary key and fail the append, never fork the chain.
_APPEND_BATCH = """
WITH RECURSIVE head AS (
    SELECT sequence, hash FROM audit_chain_head WHERE id = 1
    FOR UPDATE
), batch AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[],
                         $7::text[], $8::text[])
        WITH ORDINALITY AS b(id, time, agent_id, tool, decision, database, statement_kind, record, ord)
), linked(ord, sequence, prev_hash, hash) AS (
    SELECT 0::bigint, sequence, NULL::text, hash FROM head
    UNION ALL
    SELECT b.ord, l.sequence + 1, l.hash,
           encode(sha256(convert_to(
               '{"event":' || b.record || ',"prev_hash":"' || l.hash || '","sequence":' || (l.sequence + 1) || '}',
               'UTF8')), 'hex')
    FROM linked l JOIN batch b ON b.ord = l.ord + 1
), inserted AS (
    INSERT INTO audit_events (sequence, id, time, agent_id, tool, decision, database, statement_kind,
                              record, prev_hash, hash)
    SELECT l.sequence, b.id, b.time, b.agent_id, b.tool, b.decision, b.database, b.statement_kind,
           b.record, l.prev_hash, l.hash
    FROM linked l JOIN batch b ON b.ord = l.ord
    RETURNING sequence, prev_hash, hash
), moved AS (
    UPDATE audit_chain_head SET sequence = last.sequence, hash = last.hash
    FROM (SELECT sequence, hash FROM linked WHERE ord > 0 ORDER BY ord DESC LIMIT 1) AS last
    WHERE audit_chain_head.id = 1
    RETURNING audit_chain_head.sequence
)
SELECT sequence, prev_hash, hash, (SELECT count(*) FROM moved) AS moved FROM inserted ORDER BY sequence
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
        self.group_commit = GroupCommit(
            self._write_batch,
            per_event=lambda error: isinstance(error.__cause__, asyncpg.IntegrityConstraintViolationError),
        )

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
        self._check_open()
        return await self.group_commit.append(prepared)

    async def _write_batch(self, batch: list[PreparedEvent]) -> list[StoredEvent]:
        events = [p.event for p in batch]
        try:
            rows = await self._pool.fetch(
                _APPEND_BATCH,
                [e.id for e in events],
                [e.time for e in events],
                [column_text(e.agent_id) for e in events],
                [column_text(e.tool) for e in events],
                [column_text(e.decision) for e in events],
                [column_text(e.database) for e in events],
                [column_text(e.statement_kind) for e in events],
                [p.record_json for p in batch],
            )
        except Exception as error:
            raise StoreError(f"the audit event could not be written: {_describe(error)}") from error
        if len(rows) != len(batch) or any(row[3] != 1 for row in rows):
            # the head row is gone: the store was tampered with or half-migrated
            raise StoreError("the audit chain head is missing from the state store")
        return [
            StoredEvent(sequence=int(row[0]), prev_hash=str(row[1]), hash=str(row[2]), event=event)
            for row, event in zip(rows, events, strict=True)
        ]

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
        tool: str | None = None,
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
        if tool is not None:
            params.append(tool)
            clauses.append(f"tool = ${len(params)}")
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

    async def _select_audit_rows(self, after_sequence: int, limit: int) -> list[tuple[int, str, str, str]]:
        self._check_open()
        sql = (
            "SELECT sequence, prev_hash, hash, record FROM audit_events WHERE sequence > $1 ORDER BY sequence LIMIT $2"
        )
        try:
            rows = await self._pool.fetch(sql, after_sequence, limit)
        except Exception as error:
            raise StoreError(f"the audit trail could not be read: {_describe(error)}") from error
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    async def delete_audit_through(self, sequence: int) -> int:
        self._check_open()
        try:
            status = await self._pool.execute("DELETE FROM audit_events WHERE sequence <= $1", sequence)
        except Exception as error:
            raise StoreError(f"old audit events could not be deleted: {_describe(error)}") from error
        return int(status.rsplit(" ", 1)[-1])

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

    # -- approvals -----------------------------------------------------------------------------

    async def create_approval(self, approval: Approval) -> None:
        self._check_open()
        row = approval_row(approval, as_utc)
        placeholders = ", ".join(f"${i}" for i in range(1, len(row) + 1))
        try:
            await self._pool.execute(f"INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES ({placeholders})", *row)
        except Exception as error:
            raise StoreError(f"the approval could not be written: {_describe(error)}") from error

    async def get_approval(self, approval_id: str) -> Approval | None:
        self._check_open()
        try:
            row = await self._pool.fetchrow(f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = $1", approval_id)
        except Exception as error:
            raise StoreError(f"the approval could not be read: {_describe(error)}") from error
        return None if row is None else approval_from_row(tuple(row), as_utc)

    async def list_approvals(self, *, statuses: Sequence[str] | None = None, limit: int = 100) -> list[Approval]:
        self._check_open()
        sql = f"SELECT {APPROVAL_COLUMNS} FROM approvals"
        params: list[Any] = []
        if statuses is not None:
            params.append(list(statuses))
            sql += " WHERE status = ANY($1::text[])"
        params.append(max(0, int(limit)))
        sql += f" ORDER BY created_at DESC, id LIMIT ${len(params)}"
        try:
            rows = await self._pool.fetch(sql, *params)
        except Exception as error:
            raise StoreError(f"the approvals could not be read: {_describe(error)}") from error
        return [approval_from_row(tuple(row), as_utc) for row in rows]

    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, reason: str | None, via: str, now: datetime
    ) -> Approval | None:
        sql = (
            "UPDATE approvals SET status = $2, decided_by = $3, decided_at = $4, decision_reason = $5,"
            " decided_via = $6 WHERE id = $1 AND status = 'pending' AND expires_at > $4"
            f" RETURNING {APPROVAL_COLUMNS}"
        )
        status = "approved" if approve else "denied"
        return await self._update_approval(sql, (approval_id, status, by, as_utc(now), reason, via), "decided")

    async def consume_approval(
        self,
        approval_id: str,
        *,
        agent_id: str,
        database: str,
        fingerprint: str,
        policy_version: str,
        now: datetime,
    ) -> Approval | None:
        # Under READ COMMITTED a second caller waits for the first one's row lock, then re-checks
        # the WHERE clause against the committed row: status is 'used' by then, so it gets nothing.
        sql = (
            "UPDATE approvals SET status = 'used', used_at = $2 WHERE id = $1 AND status = 'approved'"
            " AND expires_at > $2 AND agent_id = $3 AND database = $4 AND fingerprint = $5 AND policy_version = $6"
            f" RETURNING {APPROVAL_COLUMNS}"
        )
        params = (approval_id, as_utc(now), agent_id, database, fingerprint, policy_version)
        return await self._update_approval(sql, params, "used")

    async def _update_approval(self, sql: str, params: tuple[Any, ...], what: str) -> Approval | None:
        """The conditional UPDATE and, when it matched, a NOTIFY on the approvals channel, in one
        transaction (the notification goes out on commit, never for a change that rolled back)."""
        self._check_open()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                row = await conn.fetchrow(sql, *params)
                if row is not None:
                    await conn.execute("SELECT pg_notify($1, $2)", APPROVALS_CHANNEL, row["id"])
        except Exception as error:
            raise StoreError(f"the approval could not be {what}: {_describe(error)}") from error
        return None if row is None else approval_from_row(tuple(row), as_utc)

    async def listen_approvals(self, on_change: Callable[[str], None]) -> ApprovalListener | None:
        """LISTEN on a connection held from the pool for as long as the listener lives."""
        self._check_open()
        try:
            conn = await self._pool.acquire()
        except Exception as error:
            raise StoreError(f"cannot listen for approval decisions: {_describe(error)}") from error
        listener = _PostgresListener(self._pool, conn, on_change)
        try:
            await conn.add_listener(APPROVALS_CHANNEL, listener.notified)
        except Exception as error:
            await listener.close()
            raise StoreError(f"cannot listen for approval decisions: {_describe(error)}") from error
        conn.add_termination_listener(listener.terminated)
        return listener

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.group_commit.drain()  # appends already queued are written, not dropped
        try:
            await asyncio.wait_for(self._pool.close(), timeout=10)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self._pool.terminate()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the state store is closed")


class _PostgresListener(ApprovalListener):
    """LISTEN bastion_approvals on one pooled connection; the payload is the approval id."""

    def __init__(self, pool: asyncpg.Pool, conn: Any, on_change: Callable[[str], None]) -> None:
        self._pool = pool
        self._conn = conn
        self._on_change = on_change
        self._closed = False
        self.alive = True

    def notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            self._on_change(payload)
        except Exception:  # a waiter's bug must not kill the listener
            logging.getLogger(__name__).exception("an approval notification could not be delivered")

    def terminated(self, _conn: Any) -> None:
        self.alive = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.alive = False
        try:
            await asyncio.wait_for(self._conn.remove_listener(APPROVALS_CHANNEL, self.notified), timeout=5)
        except Exception:  # the connection is gone or wedged: do not hand it back listening
            self._conn.terminate()
        with contextlib.suppress(Exception):
            await self._pool.release(self._conn)


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
