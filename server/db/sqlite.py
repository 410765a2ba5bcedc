"""SQLite, for the embedded demo and small deployments, without blocking the event loop.

sqlite3 is synchronous, so every statement runs in a worker thread: reads in a small pool of
threads, each with its own connection, writes in a single thread with the one read-write
connection (SQLite has one writer anyway). A connection is only ever used by the thread that
opened it.

Reads are locked twice over, the way PostgreSQL's read-only transaction is: the file is opened
with `mode=ro` (plus `PRAGMA query_only`), and an authorizer allows nothing but reading tables and
calling harmless functions, so a write is refused while the statement is compiled even if the file
were writable. ATTACH (which would reach any file the process can), PRAGMA and extension loading
are refused on every connection. A progress handler interrupts a statement that runs past its
deadline, the equivalent of `statement_timeout`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from server.config import DatabaseConfig
from server.db.base import (
    Catalog,
    ColumnInfo,
    ExecutionLimits,
    ForeignKey,
    QueryResult,
    ResultColumn,
    TableInfo,
)
from server.db.errors import sqlite_error, unreachable_error
from server.errors import ConfigError, QueryFailed

log = logging.getLogger(__name__)

T = TypeVar("T")

#: SQLite VM instructions between two looks at the clock; cheap, and well under a millisecond
PROGRESS_STEPS = 1_000
FETCH_CHUNK = 500
CATALOG_TIMEOUT_MS = 30_000
#: values longer than this are refused by SQLite itself, so zeroblob(1e9) cannot eat the memory
MIN_VALUE_LIMIT = 16 * 1024 * 1024

_READS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
_DML = {sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE}
_NEVER = {
    sqlite3.SQLITE_ATTACH: "ATTACH",
    sqlite3.SQLITE_DETACH: "DETACH",
    sqlite3.SQLITE_PRAGMA: "PRAGMA",
    sqlite3.SQLITE_TRANSACTION: "transaction control",
    sqlite3.SQLITE_SAVEPOINT: "SAVEPOINT",
}
_SCHEMA_TABLES = {"sqlite_master", "sqlite_schema"}
#: functions that reach outside the database (files, extensions, tokenizer pointers)
DENIED_FUNCTIONS = frozenset(
    {"load_extension", "fts3_tokenizer", "readfile", "writefile", "edit", "zipfile", "sqlar_uncompress"}
)


class _Guard:
    """A connection's authorizer. `mode` says what the current statement may do: "read",
    "explain" (compiles DML for a plan but runs nothing), "write", or "internal" for Bastion's own
    BEGIN/COMMIT and catalog pragmas. A refusal is remembered so the error can say what it was."""

    def __init__(self) -> None:
        self.mode = "read"
        self.refused: str | None = None

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, src: str | None) -> int:
        mode = self.mode
        if mode == "internal":
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            if (arg2 or "").lower() in DENIED_FUNCTIONS:
                return self._deny(f"the function {arg2}")
            return sqlite3.SQLITE_OK
        if action in _READS:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_UPDATE and arg1 in _SCHEMA_TABLES:
            # SQLite asks this when it first sets up an eponymous virtual table (json_each) on a
            # connection; writing the schema table for real needs PRAGMA writable_schema
            return sqlite3.SQLITE_OK
        if action in _NEVER:
            return self._deny(_NEVER[action])
        if mode == "write" or (mode == "explain" and action in _DML):
            return sqlite3.SQLITE_OK
        return self._deny("write")

    def _deny(self, what: str) -> int:
        if self.refused is None:
            self.refused = what
        return sqlite3.SQLITE_DENY


def _row_size(row: tuple[Any, ...]) -> int:
    total = 0
    for value in row:
        total += len(value) if isinstance(value, (str, bytes)) else 8
    return total


_STORAGE_CLASS = {int: "INTEGER", float: "REAL", str: "TEXT", bytes: "BLOB"}


def _result_columns(description: Any, rows: list[tuple[Any, ...]]) -> tuple[ResultColumn, ...]:
    """SQLite reports no result types, so each column gets the storage class of its first
    non-null value ("" when every value is null)."""
    columns = []
    for index, entry in enumerate(description or ()):
        type_name = next((_STORAGE_CLASS.get(type(row[index]), "") for row in rows if row[index] is not None), "")
        columns.append(ResultColumn(name=entry[0], type_name=type_name))
    return tuple(columns)


def _fetch(cursor: sqlite3.Cursor, limits: ExecutionLimits) -> tuple[list[tuple[Any, ...]], str | None]:
    rows: list[tuple[Any, ...]] = []
    budget = limits.max_result_bytes
    want = limits.max_rows + 1
    while True:
        batch = cursor.fetchmany(min(want - len(rows), FETCH_CHUNK))
        if not batch:
            return rows, None
        for row in batch:
            if len(rows) >= limits.max_rows:
                return rows, "rows"
            budget -= _row_size(row)
            if budget < 0:
                return rows, "bytes"
            rows.append(row)


def _plan_lines(rows: list[tuple[Any, ...]]) -> list[str]:
    """EXPLAIN QUERY PLAN rows (id, parent, notused, detail) as an indented tree."""
    depth: dict[int, int] = {}
    lines = []
    for node, parent, _, detail in rows:
        depth[node] = depth.get(parent, -1) + 1
        lines.append("  " * depth[node] + str(detail))
    return lines


class SqliteDatabase:
    """One configured SQLite file."""

    dialect = "sqlite"

    def __init__(self, name: str, config: DatabaseConfig, *, path: Path) -> None:
        self.name = name
        self.config = config
        self.path = path.resolve()
        self._readers: ThreadPoolExecutor | None = None
        self._writer: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        self._catalog: Catalog | None = None
        self._catalog_lock = asyncio.Lock()

    # life cycle

    async def open(self) -> None:
        if not self.path.is_file():
            raise ConfigError(f"database {self.name}: the SQLite file {self.path} does not exist")
        if self._readers is None:
            workers = max(1, min(self.config.pool_max_size, 8))
            self._readers = ThreadPoolExecutor(workers, thread_name_prefix=f"bastion-sqlite-{self.name}")
        if self._writer is None and not self.config.read_only:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix=f"bastion-sqlite-{self.name}-w")
        try:
            await self._in_readers(self._probe)
        except QueryFailed as error:
            await self.close()
            raise ConfigError(
                f"database {self.name}: cannot read the SQLite file {self.path}: {error.message}"
            ) from None

    async def close(self) -> None:
        executors = [e for e in (self._readers, self._writer) if e is not None]
        self._readers = self._writer = None
        if executors:
            await asyncio.get_running_loop().run_in_executor(None, self._shutdown, executors)

    def _shutdown(self, executors: list[ThreadPoolExecutor]) -> None:
        """Wait for running statements (their deadline bounds the wait), then close every
        connection; no thread uses them any more."""
        for executor in executors:
            executor.shutdown(wait=True)
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    # connections (worker threads only)

    def _connect(self, *, write: bool) -> tuple[sqlite3.Connection, _Guard]:
        uri = self.path.as_uri() + ("?mode=rw" if write else "?mode=ro")
        conn = sqlite3.connect(
            uri,
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=self.config.statement_timeout_ms / 1000,
            # the authorizer runs only when a statement is compiled: a cached statement (our own
            # COMMIT, say) would be reused by the same text from a caller without a check
            cached_statements=0,
        )
        conn.execute("PRAGMA trusted_schema = OFF")
        if write:
            conn.execute("PRAGMA foreign_keys = ON")
        else:
            conn.execute("PRAGMA query_only = ON")
        conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max(self.config.max_result_bytes, MIN_VALUE_LIMIT))
        guard = _Guard()
        conn.set_authorizer(guard)
        with self._connections_lock:
            self._connections.append(conn)
        return conn, guard

    def _connection(self, *, write: bool) -> tuple[sqlite3.Connection, _Guard]:
        key = "writer" if write else "reader"
        pair = getattr(self._local, key, None)
        if pair is None:
            pair = self._connect(write=write)
            setattr(self._local, key, pair)
        return pair

    def _guarded(
        self,
        mode: str,
        limits: ExecutionLimits,
        deadline: float,
        body: Callable[[sqlite3.Connection, _Guard], T],
        *,
        write: bool = False,
        sql: str = "",
    ) -> T:
        """Run `body` with the authorizer in `mode` and the progress handler watching the
        deadline; translate sqlite3 errors (`sql` is the caller's statement, if any)."""
        timed_out = False

        def progress() -> int:
            nonlocal timed_out
            if time.monotonic() > deadline:
                timed_out = True
                return 1
            return 0

        try:
            conn, guard = self._connection(write=write)
        except sqlite3.Error as error:
            raise sqlite_error(error, database=self.name, timeout_ms=limits.statement_timeout_ms) from None
        guard.mode, guard.refused = mode, None
        conn.set_progress_handler(progress, PROGRESS_STEPS)
        try:
            return body(conn, guard)
        except sqlite3.Error as error:
            raise sqlite_error(
                error,
                database=self.name,
                timeout_ms=limits.statement_timeout_ms,
                timed_out=timed_out,
                refused=guard.refused,
                sql=sql,
            ) from None
        finally:
            conn.set_progress_handler(None, 0)
            guard.mode = "read"

    async def _in_readers(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._in(self._readers, fn, *args)

    async def _in(self, executor: ThreadPoolExecutor | None, fn: Callable[..., T], *args: Any) -> T:
        if executor is None:
            raise unreachable_error(self.name)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, functools.partial(fn, *args))

    # statements

    def _probe(self) -> None:
        limits = ExecutionLimits(max_rows=1, max_result_bytes=1024, statement_timeout_ms=CATALOG_TIMEOUT_MS)
        deadline = time.monotonic() + CATALOG_TIMEOUT_MS / 1000
        self._guarded("read", limits, deadline, lambda conn, _: conn.execute("SELECT 1 FROM sqlite_master"))

    def _read(self, sql: str, limits: ExecutionLimits, deadline: float) -> QueryResult:
        def body(conn: sqlite3.Connection, _: _Guard) -> QueryResult:
            cursor = conn.execute(sql)
            try:
                rows, truncated_by = _fetch(cursor, limits)
            finally:
                cursor.close()  # ends the statement, so its read lock is released now
            return QueryResult(
                columns=_result_columns(cursor.description, rows),
                rows=rows,
                row_count=len(rows),
                truncated=truncated_by is not None,
                truncated_by=truncated_by,
            )

        return self._guarded("read", limits, deadline, body, sql=sql)

    def _explain(self, sql: str, limits: ExecutionLimits, deadline: float) -> list[str]:
        def body(conn: sqlite3.Connection, _: _Guard) -> list[str]:
            return _plan_lines(conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall())

        return self._guarded("explain", limits, deadline, body, sql=sql)

    def _write(self, sql: str, limits: ExecutionLimits, deadline: float) -> QueryResult:
        def body(conn: sqlite3.Connection, guard: _Guard) -> QueryResult:
            guard.mode = "internal"
            conn.execute("BEGIN IMMEDIATE")
            try:
                guard.mode = "write"
                cursor = conn.execute(sql)
                description = cursor.description
                if description:
                    # RETURNING: SQLite made every change at the first step; count what is not kept
                    rows, truncated_by = _fetch(cursor, limits)
                    affected = len(rows) + (1 if truncated_by else 0)
                    affected += sum(len(batch) for batch in iter(lambda: cursor.fetchmany(FETCH_CHUNK), []))
                else:
                    rows, truncated_by = [], None
                    affected = cursor.rowcount
                cursor.close()
                guard.mode = "internal"
                conn.set_progress_handler(None, 0)  # the statement finished in time: commit it
                conn.execute("COMMIT")
            except BaseException:
                guard.mode = "internal"
                conn.set_progress_handler(None, 0)
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.warning("database %s: a failed write could not be rolled back", self.name)
                raise
            return QueryResult(
                columns=_result_columns(description, rows),
                rows=rows,
                row_count=len(rows),
                truncated=truncated_by is not None,
                truncated_by=truncated_by,
                affected_rows=affected if affected >= 0 else None,
            )

        return self._guarded("write", limits, deadline, body, write=True, sql=sql)

    async def fetch_read(self, sql: str, limits: ExecutionLimits) -> QueryResult:
        deadline = time.monotonic() + limits.statement_timeout_ms / 1000
        return await self._in_readers(self._read, sql, limits, deadline)

    async def explain(self, sql: str, limits: ExecutionLimits) -> list[str]:
        deadline = time.monotonic() + limits.statement_timeout_ms / 1000
        return await self._in_readers(self._explain, sql, limits, deadline)

    async def execute_write(self, sql: str, limits: ExecutionLimits) -> QueryResult:
        """Run one write and commit it, on the single read-write connection."""
        if self.config.read_only:
            raise QueryFailed(
                f"database {self.name} is configured read-only",
                hint=f"The operator must set databases.{self.name}.read_only: false to allow writes.",
                sqlstate="25006",
            )
        deadline = time.monotonic() + limits.statement_timeout_ms / 1000
        return await self._in(self._writer, self._write, sql, limits, deadline)

    # catalog

    async def catalog(self, *, refresh: bool = False) -> Catalog:
        if self._catalog is not None and not refresh:
            return self._catalog
        async with self._catalog_lock:
            if self._catalog is None or refresh:
                self._catalog = await self._in_readers(self._read_catalog)
            return self._catalog

    def _read_catalog(self) -> Catalog:
        limits = ExecutionLimits(max_rows=1, max_result_bytes=1, statement_timeout_ms=CATALOG_TIMEOUT_MS)
        deadline = time.monotonic() + CATALOG_TIMEOUT_MS / 1000
        tables = self._guarded("internal", limits, deadline, lambda conn, _: _introspect(conn))
        return Catalog(
            database=self.name,
            dialect=self.dialect,
            tables=tables,
            search_path=("main",),
            schemas=("main",),
        )


def _introspect(conn: sqlite3.Connection) -> dict[tuple[str, str], TableInfo]:
    """Tables and views of the main schema with their columns, keys and foreign keys. One pragma
    pair per table: in-process and cheap, and a broken view costs only itself."""
    objects = conn.execute(
        "SELECT type, name FROM main.sqlite_master WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
    ).fetchall()
    found: dict[str, tuple[str, list[tuple[Any, ...]], list[tuple[Any, ...]]]] = {}
    for kind, name in objects:
        try:
            columns = conn.execute(
                'SELECT name, type, "notnull", dflt_value, pk, hidden FROM pragma_table_xinfo(?, ?) ORDER BY cid',
                (name, "main"),
            ).fetchall()
            fks = conn.execute(
                'SELECT id, "table", "from", "to" FROM pragma_foreign_key_list(?, ?) ORDER BY id, seq',
                (name, "main"),
            ).fetchall()
        except sqlite3.Error as error:
            log.warning("%s %s is skipped from the catalog: %s", kind, name, getattr(error, "sqlite_errorname", error))
            continue
        found[name] = (kind, columns, fks)

    primary = {
        name: tuple(col[0] for col in sorted((c for c in columns if c[4]), key=lambda c: c[4]))
        for name, (_, columns, _) in found.items()
    }
    tables: dict[tuple[str, str], TableInfo] = {}
    for name, (kind, columns, fks) in found.items():
        pk = primary[name]
        grouped: dict[int, list[tuple[Any, ...]]] = {}
        for fk in fks:
            grouped.setdefault(fk[0], []).append(fk)
        foreign_keys = tuple(
            ForeignKey(
                columns=tuple(part[2] for part in parts),
                ref_schema="main",
                ref_table=parts[0][1],
                ref_columns=tuple(part[3] for part in parts)
                if all(part[3] for part in parts)
                else primary.get(parts[0][1], ()),
            )
            for parts in grouped.values()
        )
        tables[("main", name)] = TableInfo(
            schema="main",
            name=name,
            kind="view" if kind == "view" else "table",
            columns=tuple(
                ColumnInfo(
                    name=col[0],
                    data_type=col[1] or "",
                    # an INTEGER PRIMARY KEY is the rowid: never NULL, though SQLite reports notnull=0
                    nullable=not col[2] and not (pk == (col[0],) and (col[1] or "").upper() == "INTEGER"),
                    primary_key=col[0] in pk,
                    default=col[3],
                )
                for col in columns
                if col[5] != 1  # hidden columns of virtual tables
            ),
            primary_key=pk,
            foreign_keys=foreign_keys,
        )
    return tables
