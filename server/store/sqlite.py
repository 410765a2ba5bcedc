"""The SQLite state store: the embedded default, one file beside the config.

sqlite3 blocks, so every call runs on a thread, never on the event loop. There are two threads, each
owning one connection (sqlite3 connections must stay on the thread that made them): the writer, the
only one that appends, and the reader, so that an export of a long trail never holds up an append.
The file is in WAL mode, where readers and the writer do not block each other.

Durability: `synchronous=FULL`, so each commit is fsynced before `append_audit` returns; with WAL,
NORMAL would be faster but may lose the last commits on power loss, and the promise is that an answer
never leaves without its audit event on disk.

Linearity and group commit: `append_audit` queues the event (`GroupCommit` in base.py); the queue is
drained by one flusher that hands everything waiting to the writer thread, which runs `BEGIN
IMMEDIATE` (SQLite's write lock, which also holds off another process sharing the file), reads the
chain head, links and inserts each event in order, moves the head and commits: one fsync for all the
calls that arrived while the previous commit was flushing.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from server.approvals.model import Approval
from server.audit.chain import ChainHead, link_hash
from server.audit.event import AuditEvent, StoredEvent
from server.pii.model import ColumnClassification
from server.store.base import (
    APPROVAL_COLUMNS,
    CLASSIFICATION_COLUMNS,
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

T = TypeVar("T")

_HEAD = "SELECT sequence, hash FROM audit_chain_head WHERE id = 1"
_INSERT = (
    "INSERT INTO audit_events (sequence, id, time, agent_id, tool, decision, database, statement_kind,"
    " record, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def sqlite_time(moment: datetime) -> str:
    """UTC, fixed width, so that comparing the text compares the times."""
    return as_utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _ConnectionThread:
    """One thread and the one connection it owns; calls run there one at a time, in order."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._conn: sqlite3.Connection | None = None

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            future = asyncio.get_running_loop().run_in_executor(self._executor, self._call, work)
        except RuntimeError:  # the executor was shut down by close()
            raise StoreError("the state store is closed") from None
        return await future

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._conn is None:
            raise StoreError("the state store is closed")
        return work(self._conn)

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        def opener() -> None:
            self._conn = connect()

        await asyncio.get_running_loop().run_in_executor(self._executor, opener)

    async def close(self) -> None:
        def closer() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, closer)
        finally:
            self._executor.shutdown(wait=False)


class SQLiteStore(StateStore):
    dialect = "sqlite"

    def __init__(self, path: Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._writer = _ConnectionThread("bastion-state-writer")
        self._reader = _ConnectionThread("bastion-state-reader")
        self._write_lock = asyncio.Lock()
        self._closed = False
        self.group_commit = GroupCommit(
            self._write_batch, per_event=lambda error: isinstance(error.__cause__, sqlite3.IntegrityError)
        )

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int = 5000) -> SQLiteStore:
        """Create the file (and its folders) if needed, bring its schema up to date, and start the
        threads. Raises StoreError naming the path (never secret) when the file cannot be used."""
        store = cls(path, busy_timeout_ms=busy_timeout_ms)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            await store._writer.open(store._connect_writer)
            await store._writer.run(_migrate)
            await store._reader.open(store._connect_reader)
        except (OSError, sqlite3.Error) as error:
            await store._shutdown()
            raise StoreError(f"cannot open the SQLite state store at {path}: {_describe(error)}") from error
        except BaseException:
            await store._shutdown()
            raise
        return store

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; appends say BEGIN IMMEDIATE themselves
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        return conn

    def _connect_writer(self) -> sqlite3.Connection:
        conn = self._connect()
        try:
            mode = self._enable_wal(conn)
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"the SQLite state store at {self.path} cannot use WAL mode (got {mode}); "
                    "put it on a local file system"
                )
            conn.execute("PRAGMA synchronous = FULL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> str:
        """Switching a new file to WAL needs an exclusive lock, and SQLite reports a busy file at once
        instead of calling the busy handler, so two processes creating the store together retry here."""
        deadline = time.monotonic() + self._busy_timeout_ms / 1000
        while True:
            try:
                return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def _connect_reader(self) -> sqlite3.Connection:
        conn = self._connect()
        conn.execute("PRAGMA query_only = ON")
        return conn

    async def append_audit(self, event: AuditEvent) -> StoredEvent:
        prepared = prepare_event(event)
        self._check_open()
        return await self.group_commit.append(prepared)

    async def _write_batch(self, batch: list[PreparedEvent]) -> list[StoredEvent]:
        """One transaction for the batch; also the path `close` drains, so it does not check `_closed`
        (a closed writer thread refuses the work by itself)."""
        async with self._write_lock:
            try:
                return await self._writer.run(lambda conn: _append_batch(conn, batch))
            except sqlite3.Error as error:
                raise StoreError(f"the audit event could not be written: {_describe(error)}") from error

    async def audit_chain_head(self) -> ChainHead:
        self._check_open()
        try:
            row = await self._reader.run(lambda conn: conn.execute(_HEAD).fetchone())
        except sqlite3.Error as error:
            raise StoreError(f"the audit chain head could not be read: {_describe(error)}") from error
        return ChainHead(int(row[0]), str(row[1]))

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
        params: list[object] = []
        if since is not None:
            clauses.append("time >= ?")
            params.append(sqlite_time(since))
        if until is not None:
            clauses.append("time < ?")
            params.append(sqlite_time(until))
        if after_sequence is not None:
            clauses.append("sequence > ?")
            params.append(after_sequence)
        if tool is not None:
            clauses.append("tool = ?")
            params.append(tool)
        sql = "SELECT sequence, prev_hash, hash, record FROM audit_events"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY sequence DESC" if newest_first else " ORDER BY sequence"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)

        def select(conn: sqlite3.Connection) -> list[StoredEvent]:
            return [decode_event(*row) for row in conn.execute(sql, params)]

        try:
            return await self._reader.run(select)
        except sqlite3.Error as error:
            raise StoreError(f"the audit trail could not be read: {_describe(error)}") from error

    async def _select_audit_rows(self, after_sequence: int, limit: int) -> list[tuple[int, str, str, str]]:
        self._check_open()
        sql = "SELECT sequence, prev_hash, hash, record FROM audit_events WHERE sequence > ? ORDER BY sequence LIMIT ?"
        try:
            return await self._reader.run(lambda conn: conn.execute(sql, (after_sequence, limit)).fetchall())
        except sqlite3.Error as error:
            raise StoreError(f"the audit trail could not be read: {_describe(error)}") from error

    async def delete_audit_through(self, sequence: int) -> int:
        def delete(conn: sqlite3.Connection) -> int:
            return _in_transaction(
                conn, lambda: int(conn.execute("DELETE FROM audit_events WHERE sequence <= ?", (sequence,)).rowcount)
            )

        async with self._write_lock:
            self._check_open()
            try:
                return await self._writer.run(delete)
            except sqlite3.Error as error:
                raise StoreError(f"old audit events could not be deleted: {_describe(error)}") from error

    async def save_classifications(self, classifications: list[ColumnClassification]) -> None:
        if not classifications:
            return
        rows = [classification_row(c) for c in classifications]
        async with self._write_lock:
            self._check_open()
            try:
                await self._writer.run(lambda conn: _upsert_classifications(conn, rows))
            except sqlite3.Error as error:
                raise StoreError(f"the catalog classifications could not be written: {_describe(error)}") from error

    async def load_classifications(self, database: str) -> dict[tuple[str, str, str], ColumnClassification]:
        self._check_open()
        sql = f"SELECT {CLASSIFICATION_COLUMNS} FROM catalog_classifications WHERE database = ?"
        try:
            rows = await self._reader.run(lambda conn: conn.execute(sql, (database,)).fetchall())
        except sqlite3.Error as error:
            raise StoreError(f"the catalog classifications could not be read: {_describe(error)}") from error
        loaded = (classification_from_row(row) for row in rows)
        return {c.key: c for c in loaded}

    # -- approvals -----------------------------------------------------------------------------

    async def create_approval(self, approval: Approval) -> None:
        row = approval_row(approval, sqlite_time)
        sql = f"INSERT INTO approvals ({APPROVAL_COLUMNS}) VALUES ({', '.join('?' * len(row))})"
        await self._approval_write(lambda conn: _in_transaction(conn, lambda: conn.execute(sql, row)), "written")

    async def get_approval(self, approval_id: str) -> Approval | None:
        self._check_open()
        sql = f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?"
        try:
            row = await self._reader.run(lambda conn: conn.execute(sql, (approval_id,)).fetchone())
        except sqlite3.Error as error:
            raise StoreError(f"the approval could not be read: {_describe(error)}") from error
        return None if row is None else approval_from_row(row, _parse_time)

    async def list_approvals(self, *, statuses: Sequence[str] | None = None, limit: int = 100) -> list[Approval]:
        self._check_open()
        sql = f"SELECT {APPROVAL_COLUMNS} FROM approvals"
        params: list[object] = []
        if statuses is not None:
            sql += f" WHERE status IN ({', '.join('?' * len(statuses))})" if statuses else " WHERE 0"
            params.extend(statuses)
        sql += " ORDER BY created_at DESC, id LIMIT ?"
        params.append(max(0, int(limit)))
        try:
            rows = await self._reader.run(lambda conn: conn.execute(sql, params).fetchall())
        except sqlite3.Error as error:
            raise StoreError(f"the approvals could not be read: {_describe(error)}") from error
        return [approval_from_row(row, _parse_time) for row in rows]

    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, reason: str | None, via: str, now: datetime
    ) -> Approval | None:
        update = (
            "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, decision_reason = ?, decided_via = ?"
            " WHERE id = ? AND status = 'pending' AND expires_at > ?"
        )
        at = sqlite_time(now)
        params = ("approved" if approve else "denied", by, at, reason, via, approval_id, at)
        return await self._approval_write(lambda conn: _update_approval(conn, update, params, approval_id), "decided")

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
        update = (
            "UPDATE approvals SET status = 'used', used_at = ? WHERE id = ? AND status = 'approved'"
            " AND expires_at > ? AND agent_id = ? AND database = ? AND fingerprint = ? AND policy_version = ?"
        )
        at = sqlite_time(now)
        params = (at, approval_id, at, agent_id, database, fingerprint, policy_version)
        return await self._approval_write(lambda conn: _update_approval(conn, update, params, approval_id), "used")

    async def _approval_write(self, work: Callable[[sqlite3.Connection], T], what: str) -> T:
        async with self._write_lock:
            self._check_open()
            try:
                return await self._writer.run(work)
            except sqlite3.Error as error:
                raise StoreError(f"the approval could not be {what}: {_describe(error)}") from error

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.group_commit.drain()  # appends already queued are written, not dropped
        async with self._write_lock:  # let a write in flight finish
            await self._shutdown()

    async def _shutdown(self) -> None:
        for thread in (self._reader, self._writer):
            with contextlib.suppress(sqlite3.Error):
                await thread.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the state store is closed")


def _append_batch(conn: sqlite3.Connection, batch: list[PreparedEvent]) -> list[StoredEvent]:
    """Runs on the writer thread: read the head, link and insert each event in order, advance the
    head, commit; all or nothing."""
    return _in_transaction(conn, lambda: _link_and_insert(conn, batch))


def _link_and_insert(conn: sqlite3.Connection, batch: list[PreparedEvent]) -> list[StoredEvent]:
    head = conn.execute(_HEAD).fetchone()
    if head is None:  # tampered with, or half-migrated by hand
        raise StoreError("the audit chain head is missing from the state store")
    sequence, prev_hash = int(head[0]), str(head[1])
    stored: list[StoredEvent] = []
    rows: list[tuple[object, ...]] = []
    for prepared in batch:
        event = prepared.event
        sequence += 1
        hash_ = link_hash(prepared.hashed_json, sequence, prev_hash)
        rows.append(
            (
                sequence,
                event.id,
                sqlite_time(event.time),
                column_text(event.agent_id),
                column_text(event.tool),
                column_text(event.decision),
                column_text(event.database),
                column_text(event.statement_kind),
                prepared.record_json,
                prev_hash,
                hash_,
            )
        )
        stored.append(StoredEvent(sequence=sequence, prev_hash=prev_hash, hash=hash_, event=event))
        prev_hash = hash_
    conn.executemany(_INSERT, rows)
    conn.execute("UPDATE audit_chain_head SET sequence = ?, hash = ? WHERE id = 1", (sequence, prev_hash))
    return stored


_UPSERT_CLASSIFICATION = (
    f"INSERT INTO catalog_classifications ({CLASSIFICATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (database, schema_name, table_name, column_name) DO UPDATE SET entity = excluded.entity,"
    " confidence = excluded.confidence, evidence = excluded.evidence, source = excluded.source,"
    " fingerprint = excluded.fingerprint,"
    " classified_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
)


def _upsert_classifications(conn: sqlite3.Connection, rows: list[tuple[object, ...]]) -> None:
    """Runs on the writer thread: all rows in one transaction."""
    _in_transaction(conn, lambda: conn.executemany(_UPSERT_CLASSIFICATION, rows))


def _parse_time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")


def _in_transaction(conn: sqlite3.Connection, work: Callable[[], T]) -> T:
    """Runs on the writer thread: `work` under SQLite's write lock (which also holds off other
    processes), committed, or rolled back on any failure; returns what `work` returned."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return result


def _update_approval(
    conn: sqlite3.Connection, update: str, params: tuple[object, ...], approval_id: str
) -> Approval | None:
    """Runs on the writer thread: a conditional UPDATE of one approval under the write lock (which
    also holds off other processes), and the row as it now is when the condition held."""
    result: list[Approval | None] = [None]

    def work() -> None:
        if conn.execute(update, params).rowcount == 1:
            row = conn.execute(f"SELECT {APPROVAL_COLUMNS} FROM approvals WHERE id = ?", (approval_id,)).fetchone()
            result[0] = approval_from_row(row, _parse_time)

    _in_transaction(conn, work)
    return result[0]


def _schema_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'").fetchone()
    if not exists:
        return 0
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])


def _migrate(conn: sqlite3.Connection) -> None:
    """Runs on the writer thread at open; see server/store/migrations.py."""
    if _schema_version(conn) == LATEST_VERSION:
        return

    def apply() -> None:  # under the write lock: another process may be migrating too
        conn.execute(SCHEMA_VERSION_TABLE["sqlite"])
        for migration in pending_migrations(_schema_version(conn)):
            for statement in migration.sqlite:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, description) VALUES (?, ?)",
                (migration.version, migration.description),
            )

    _in_transaction(conn, apply)


def _describe(error: BaseException) -> str:
    """SQLite's own words ('database is locked', 'disk I/O error'): they name no secret and tell the
    operator what to fix."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__
