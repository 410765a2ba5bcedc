"""PostgreSQL through an asyncpg pool, with the database itself enforcing every limit.

The analyzer upstream decides what may run; this module makes sure that, even if it were wrong,
the database would refuse: every read runs in a `READ ONLY` transaction that is always rolled
back, through the extended protocol (which refuses a second statement by itself), under
`SET LOCAL statement_timeout`, and its rows are streamed through a portal so a million-row table
costs no more memory than the rows asked for. A connection goes back to the pool only after
`DISCARD ALL`: asyncpg's default reset leaves `SET ROLE`, temporary tables and SQL-level prepared
statements behind, and those must not carry over from one agent's call to the next.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from operator import itemgetter
from typing import Any, TypeVar

import asyncpg

from server.config import DatabaseConfig, redact_dsn
from server.db.base import (
    Catalog,
    ColumnInfo,
    ExecutionLimits,
    ForeignKey,
    QueryResult,
    ResultColumn,
    TableInfo,
)
from server.db.errors import busy_error, postgres_error, timeout_error, unreachable_error
from server.errors import BastionError, ConfigError, QueryFailed
from server.sql.crosscheck import REQUIRED_SESSION_SETTINGS

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0
#: the server's statement_timeout fires first and gives a clean SQLSTATE; the client-side timeout
#: is the backstop for a stalled network, so it waits this much longer
CLIENT_GRACE_S = 1.0
#: an open transaction whose client went silent is killed by the server after the statement
#: timeout plus this, so a stuck Bastion process never pins a snapshot for long
IDLE_GRACE_MS = 5_000
CATALOG_TIMEOUT_MS = 30_000
#: rows fetched by the first Execute; later ones are sized from the bytes seen so far, so a table
#: of huge rows cannot make one chunk blow past max_result_bytes by much
FIRST_CHUNK = 256
MAX_CHUNK = 10_000
FORWARD_STEP = 1_000_000_000
#: Record -> tuple; slicing is twice as fast as tuple(record)
_as_tuple = itemgetter(slice(None))


# --- connection life cycle ----------------------------------------------------------------------


async def _discard_session(conn: asyncpg.Connection) -> None:
    """Pool reset: everything a session can accumulate, gone (role, GUCs, temp tables, prepared
    statements, cursors, advisory locks, LISTEN). Requires statement_cache_size=0, since it also
    drops asyncpg's own prepared statements."""
    await conn.execute("DISCARD ALL")


def _begin_sql(*, read_only: bool, timeout_ms: int) -> str:
    """One round trip opens the transaction and sets its limits (ints only, never caller text)."""
    mode = "READ ONLY" if read_only else "READ WRITE"
    timeout = int(timeout_ms)
    return (
        f"BEGIN {mode}; SET LOCAL statement_timeout = {timeout}; "
        f"SET LOCAL idle_in_transaction_session_timeout = {timeout + IDLE_GRACE_MS}"
    )


_ROLE_SQL = """
SELECT current_user::text AS role,
       current_schemas(false)::text[] AS search_path,
       coalesce(array_agg(r.rolname::text) FILTER (WHERE r.rolsuper), '{}') AS superusers,
       coalesce(array_agg(r.rolname::text) FILTER (WHERE r.rolbypassrls), '{}') AS bypassers
FROM pg_catalog.pg_roles r
WHERE pg_catalog.pg_has_role(current_user, r.oid, 'MEMBER') AND (r.rolsuper OR r.rolbypassrls)
"""

_AUTH_SQLSTATES = {"28000", "28P01", "3D000", "42501"}


# --- catalog ------------------------------------------------------------------------------------

# user relations only: schemas named pg_* are reserved for the system (pg_catalog, pg_toast,
# pg_temp_N, pg_toast_temp_N), information_schema is the other system schema
_USER_NAMESPACE = "n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'"
_RELKINDS = "c.relkind IN ('r', 'p', 'v', 'm', 'f')"
_KIND = {"r": "table", "p": "table", "v": "view", "m": "materialized_view", "f": "foreign_table"}

_SCHEMAS_SQL = f"""
SELECT ARRAY(SELECT n.nspname::text FROM pg_catalog.pg_namespace n WHERE {_USER_NAMESPACE}
             ORDER BY n.nspname) AS schemas,
       current_schemas(false)::text[] AS search_path
"""

_RELATIONS_SQL = f"""
SELECT c.oid, n.nspname::text AS schema, c.relname::text AS name, c.relkind::text AS kind,
       ds.description AS comment,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END AS definition
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_description ds
       ON ds.objoid = c.oid AND ds.classoid = 'pg_catalog.pg_class'::regclass AND ds.objsubid = 0
WHERE {_RELKINDS} AND {_USER_NAMESPACE}
"""

_COLUMNS_SQL = f"""
SELECT a.attrelid AS oid, a.attname::text AS name,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS data_type,
       NOT a.attnotnull AS nullable, a.attidentity::text AS identity, a.attgenerated::text AS generated,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS default, ds.description AS comment
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_catalog.pg_description ds
       ON ds.objoid = a.attrelid AND ds.classoid = 'pg_catalog.pg_class'::regclass
      AND ds.objsubid = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped AND {_RELKINDS} AND {_USER_NAMESPACE}
ORDER BY a.attrelid, a.attnum
"""

_CONSTRAINTS_SQL = f"""
SELECT con.conrelid AS oid, con.contype::text AS type, con.conname::text AS name,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(num, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num
             ORDER BY k.ord) AS columns,
       fn.nspname::text AS ref_schema, fc.relname::text AS ref_table,
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(num, ord)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.num
             ORDER BY k.ord) AS ref_columns
FROM pg_catalog.pg_constraint con
JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_class fc ON fc.oid = con.confrelid
LEFT JOIN pg_catalog.pg_namespace fn ON fn.oid = fc.relnamespace
WHERE con.contype IN ('p', 'f') AND {_USER_NAMESPACE}
ORDER BY con.conrelid, con.conname
"""


def _column_default(row: asyncpg.Record) -> str | None:
    if row["identity"]:
        return "generated always as identity" if row["identity"] == "a" else "generated by default as identity"
    if row["generated"]:
        return f"generated always as ({row['default']}) stored"
    return row["default"]


def _build_tables(
    relations: Sequence[asyncpg.Record],
    columns: Sequence[asyncpg.Record],
    constraints: Sequence[asyncpg.Record],
) -> dict[tuple[str, str], TableInfo]:
    by_oid: dict[int, list[asyncpg.Record]] = {}
    for col in columns:
        by_oid.setdefault(col["oid"], []).append(col)
    primary: dict[int, tuple[str, ...]] = {}
    foreign: dict[int, list[ForeignKey]] = {}
    for con in constraints:
        if con["type"] == "p":
            primary[con["oid"]] = tuple(con["columns"])
        elif con["ref_table"] is not None:
            foreign.setdefault(con["oid"], []).append(
                ForeignKey(
                    columns=tuple(con["columns"]),
                    ref_schema=con["ref_schema"],
                    ref_table=con["ref_table"],
                    ref_columns=tuple(con["ref_columns"]),
                )
            )
    tables: dict[tuple[str, str], TableInfo] = {}
    for rel in relations:
        oid = rel["oid"]
        pk = primary.get(oid, ())
        cols = tuple(
            ColumnInfo(
                name=col["name"],
                data_type=col["data_type"],
                nullable=col["nullable"],
                primary_key=col["name"] in pk,
                comment=col["comment"],
                default=_column_default(col),
            )
            for col in by_oid.get(oid, ())
        )
        tables[(rel["schema"], rel["name"])] = TableInfo(
            schema=rel["schema"],
            name=rel["name"],
            kind=_KIND[rel["kind"]],
            columns=cols,
            comment=rel["comment"],
            primary_key=pk,
            foreign_keys=tuple(foreign.get(oid, ())),
            definition=rel["definition"],
        )
    return tables


# --- result columns and row sizes ---------------------------------------------------------------

#: asyncpg reports pg_type names; agents read the SQL names format_type() uses in the catalog
_SQL_TYPE_NAMES = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "bool": "boolean",
    "varchar": "character varying",
    "bpchar": "character",
    "varbit": "bit varying",
    "timestamptz": "timestamp with time zone",
    "timestamp": "timestamp without time zone",
    "timetz": "time with time zone",
    "time": "time without time zone",
}

#: bytes a value of a fixed-width type costs in the result, roughly its wire size
_FIXED_SIZES = {
    "bool": 1,
    "char": 1,
    "int2": 2,
    "int4": 4,
    "oid": 4,
    "float4": 4,
    "date": 4,
    "int8": 8,
    "float8": 8,
    "money": 8,
    "time": 8,
    "timestamp": 8,
    "timestamptz": 8,
    "timetz": 12,
    "interval": 16,
    "uuid": 16,
    "inet": 16,
    "cidr": 16,
    "macaddr": 6,
    "macaddr8": 8,
    "point": 16,
}
#: types asyncpg decodes to str or bytes, whose len() is their size
_LEN_TYPES = {"text", "varchar", "bpchar", "name", "json", "jsonb", "xml", "bytea", "jsonpath"}


def _type_name(pg_type: Any) -> str:
    name: str = pg_type.name
    suffix = ""
    while name.endswith("[]"):
        name, suffix = name[:-2], suffix + "[]"
    base = _SQL_TYPE_NAMES.get(name, name)
    if pg_type.schema not in ("pg_catalog", "public", None):
        base = f"{pg_type.schema}.{base}"
    return base + suffix


def _value_size(value: Any) -> int:
    """A size estimate for values of the less common types, proportional to what they will cost
    as JSON: numeric by its digits (a numeric can hold 131,072 of them), bit strings by their bits,
    arrays and composites element by element, anything else by its text form."""
    if value is None:
        return 0
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if isinstance(value, Decimal):
        return 2 + len(value.as_tuple().digits) if value.is_finite() else 8
    if isinstance(value, (int, float, bool)):
        return 8
    if isinstance(value, (list, tuple, asyncpg.Record)):
        return 4 + sum(map(_value_size, value))
    if isinstance(value, asyncpg.BitString):
        return 1 + len(value)
    if isinstance(value, dict):
        return 4 + sum(_value_size(k) + _value_size(v) for k, v in value.items())
    if isinstance(value, (datetime.date, datetime.time, datetime.timedelta, uuid.UUID)):
        return 32
    return len(str(value))


class _RowSizer:
    """Estimates the bytes of fetched rows without serializing them: fixed-width columns cost a
    constant, text-like columns their len(), the rest a rough walk. Whole chunks are measured with
    C-level map/sum so the estimate stays a small fraction of the fetch itself."""

    def __init__(self, attributes: Sequence[Any]) -> None:
        self.fixed = 0
        self.len_columns: list[int] = []
        self.other_columns: list[int] = []
        for index, attribute in enumerate(attributes):
            pg_type = attribute.type
            if pg_type.schema == "pg_catalog" and pg_type.name in _FIXED_SIZES:
                self.fixed += _FIXED_SIZES[pg_type.name]
            elif pg_type.schema == "pg_catalog" and pg_type.name in _LEN_TYPES:
                self.len_columns.append(index)
            else:
                self.other_columns.append(index)
        self._len_getters = [itemgetter(i) for i in self.len_columns]
        self._other_getters = [itemgetter(i) for i in self.other_columns]

    def chunk(self, records: Sequence[asyncpg.Record]) -> int:
        total = self.fixed * len(records)
        for get in self._len_getters:
            total += sum(map(len, filter(None, map(get, records))))
        for get in self._other_getters:
            total += sum(map(_value_size, map(get, records)))
        return total

    def row(self, record: asyncpg.Record) -> int:
        total = self.fixed
        for index in self.len_columns:
            value = record[index]
            if value:
                total += len(value)
        for index in self.other_columns:
            total += _value_size(record[index])
        return total


class _Collected:
    __slots__ = ("consumed", "exhausted", "rows", "truncated_by")

    def __init__(self) -> None:
        self.rows: list[tuple[Any, ...]] = []
        self.truncated_by: str | None = None
        self.consumed = 0
        self.exhausted = False


def _client_timeout(deadline: float, timeout_ms: int) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise timeout_error(timeout_ms)
    return remaining + CLIENT_GRACE_S


async def _collect(cursor: Any, sizer: _RowSizer, limits: ExecutionLimits, deadline: float) -> _Collected:
    """Fetch up to max_rows + 1 rows (the extra one only proves truncation) and at most
    max_result_bytes, chunk by chunk through the open portal."""
    out = _Collected()
    rows = out.rows
    budget = limits.max_result_bytes
    want = limits.max_rows + 1
    chunk = min(want, FIRST_CHUNK)
    while True:
        records = await cursor.fetch(chunk, timeout=_client_timeout(deadline, limits.statement_timeout_ms))
        out.consumed += len(records)
        size = sizer.chunk(records)
        if len(rows) + len(records) <= limits.max_rows and size <= budget:
            rows.extend(map(_as_tuple, records))
            budget -= size
        else:
            for record in records:
                if len(rows) >= limits.max_rows:
                    out.truncated_by = "rows"
                    return out
                budget -= sizer.row(record)
                if budget < 0:
                    out.truncated_by = "bytes"
                    return out
                rows.append(_as_tuple(record))
        if len(records) < chunk:
            out.exhausted = True
            return out
        need = want - len(rows)
        used = limits.max_result_bytes - budget
        by_bytes = int(budget * len(rows) / used) + 1 if used > 0 else need
        chunk = max(1, min(need, by_bytes, MAX_CHUNK))


def _affected_rows(status: str | None) -> int | None:
    """'INSERT 0 5', 'UPDATE 5', 'DELETE 5', 'MERGE 5' -> 5; a tag without a count -> None."""
    if not status:
        return None
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else None


async def _prepare(conn: asyncpg.Connection, sql: str, limits: ExecutionLimits, deadline: float, database: str) -> Any:
    """Parse and describe the one statement; the extended protocol refuses a second one here."""
    timeout_ms = limits.statement_timeout_ms
    try:
        statement = await conn.prepare(sql, timeout=_client_timeout(deadline, timeout_ms))
    except asyncpg.PostgresError as error:
        raise postgres_error(error, database=database, timeout_ms=timeout_ms, parsing=True) from None
    if statement.get_parameters():
        raise QueryFailed(
            "the statement has $n parameter placeholders, which Bastion does not bind",
            hint="Write the values inline.",
            sqlstate="42P02",
        )
    return statement


def _columns(statement: Any) -> tuple[ResultColumn, ...]:
    return tuple(ResultColumn(name=a.name, type_name=_type_name(a.type)) for a in statement.get_attributes())


async def _rollback(conn: asyncpg.Connection) -> None:
    if conn.is_closed() or not conn.is_in_transaction():
        return
    try:
        await conn.execute("ROLLBACK")
    except Exception:
        # a connection that cannot roll back is not trusted with the next call
        conn.terminate()


# --- the backend --------------------------------------------------------------------------------


#: functions and operators written by users (not pg_catalog, not an extension's members): a call
#: to a built-in name can resolve to one of these overloads, and an operator to user code
#: inheritance children and partitions: reading a parent reads them too
_CHILDREN_SQL = """
SELECT pn.nspname AS parent_schema, p.relname AS parent, cn.nspname AS child_schema, c.relname AS child
FROM pg_inherits i
JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
"""

_USER_CODE_SQL = """
SELECT
  (SELECT array_agg(DISTINCT lower(p.proname)) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                      AND d.deptype = 'e')) AS functions,
  (SELECT array_agg(DISTINCT o.oprname) FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_operator'::regclass AND d.objid = o.oid
                      AND d.deptype = 'e')) AS operators
"""


def _children_of(rows: Sequence[Any]) -> dict[tuple[str, str], tuple[tuple[str, str], ...]]:
    children: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for row in rows:
        children.setdefault((row["parent_schema"], row["parent"]), []).append((row["child_schema"], row["child"]))
    return {parent: tuple(sorted(kids)) for parent, kids in children.items()}


class PostgresDatabase:
    """One configured PostgreSQL database: its pool, start-up checks and catalog snapshot."""

    dialect = "postgres"

    def __init__(self, name: str, config: DatabaseConfig) -> None:
        self.name = name
        self.config = config
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._closed = False
        self._refused: ConfigError | None = None
        self._search_path: tuple[str, ...] = ("public",)
        self._catalog: Catalog | None = None
        self._catalog_lock = asyncio.Lock()

    @property
    def pool(self) -> asyncpg.Pool | None:
        """The asyncpg pool (None until opened), for benchmarks that compare raw asyncpg on the
        same connections. Nothing in the request path may bypass the methods below."""
        return self._pool

    # life cycle

    async def open(self) -> None:
        """Create the pool and run the start-up checks. A wrong DSN, role or database, or a
        privileged role, is a ConfigError naming the DSN with its password redacted (this runs at
        start-up, for the operator). A server that cannot be reached is not fatal: the failure is
        logged, and every call tries again and says "database X is unreachable" until it comes
        up, so one database down does not stop Bastion serving the others."""
        async with self._pool_lock:
            self._closed = False
            self._refused = None
            if self._pool is None:
                try:
                    self._pool = await self._create_pool(startup=True, timeout=CONNECT_TIMEOUT_S)
                except ConfigError as error:
                    # a wrong role or database stays wrong: later calls repeat the refusal rather
                    # than reconnect (only an unreachable server is retried)
                    self._refused = error
                    raise
                except QueryFailed:
                    pass  # unreachable, and logged; each call retries

    async def close(self) -> None:
        self._closed = True
        async with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=CONNECT_TIMEOUT_S)
            except TimeoutError:
                pool.terminate()

    async def _ready_pool(self, timeout_ms: int) -> asyncpg.Pool:
        """The pool; if the database was down until now, try to connect within the call's own
        timeout (the error carries no DSN: an agent sees this one)."""
        pool = self._pool
        if pool is not None:
            return pool
        if self._refused is not None:
            raise self._refused
        if self._closed:
            raise unreachable_error(self.name)
        async with self._pool_lock:
            if self._pool is None:
                timeout = min(CONNECT_TIMEOUT_S, timeout_ms / 1000)
                try:
                    self._pool = await self._create_pool(startup=False, timeout=timeout)
                except ConfigError as error:
                    self._refused = error
                    raise
            return self._pool

    async def _create_pool(self, *, startup: bool, timeout: float) -> asyncpg.Pool:
        dsn = self.config.dsn
        where = f" ({redact_dsn(dsn)})" if startup else ""
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=self.config.pool_min_size,
                max_size=self.config.pool_max_size,
                statement_cache_size=0,
                reset=_discard_session,
                timeout=timeout,
                # standard_conforming_strings: the server must read string literals the way both
                # of Bastion's parsers did (server.sql.crosscheck); set per connection, never trusted
                server_settings={
                    "application_name": f"bastion:{self.name}"[:63],
                    **REQUIRED_SESSION_SETTINGS,
                },
            )
        except asyncpg.PostgresError as error:
            if error.sqlstate in _AUTH_SQLSTATES:
                raise ConfigError(f"database {self.name}: cannot connect{where}: {error.message}") from None
            log.warning("database %s: cannot connect to %s: SQLSTATE %s", self.name, redact_dsn(dsn), error.sqlstate)
            raise unreachable_error(self.name, error.sqlstate or "08001") from None
        except (OSError, TimeoutError, asyncpg.InterfaceError) as error:
            if isinstance(error, asyncpg.ClientConfigurationError):
                raise ConfigError(f"database {self.name}: invalid dsn{where}") from None
            log.warning("database %s: cannot connect to %s: %s", self.name, redact_dsn(dsn), type(error).__name__)
            raise unreachable_error(self.name) from None
        except ValueError:
            raise ConfigError(f"database {self.name}: invalid dsn{where}") from None
        try:
            await self._check_role(pool)
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def _check_role(self, pool: asyncpg.Pool) -> None:
        """A superuser or BYPASSRLS role (or one that can become one through membership) ignores
        row-level security and can turn the read-only transaction into anything; refuse it unless
        the operator has said they accept that."""
        try:
            row = await pool.fetchrow(_ROLE_SQL, timeout=CONNECT_TIMEOUT_S)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
            raise unreachable_error(self.name) from None
        assert row is not None
        self._search_path = tuple(row["search_path"])
        problems = []
        if row["superusers"]:
            problems.append(f"is or can become a superuser ({', '.join(row['superusers'])})")
        if row["bypassers"]:
            problems.append(f"has or can gain BYPASSRLS ({', '.join(row['bypassers'])})")
        if not problems:
            return
        what = f"database {self.name}: the role {row['role']} " + " and ".join(problems)
        if self.config.allow_privileged_role:
            log.warning("%s; allowed by allow_privileged_role, so row-level security is not enforced", what)
            return
        raise ConfigError(
            f"{what}, which bypasses row-level security and the read-only guarantees. Connect as an "
            f"ordinary role, or set databases.{self.name}.allow_privileged_role: true to accept the risk"
        )

    # running statements

    async def _run(
        self,
        limits: ExecutionLimits,
        work: Callable[[asyncpg.Connection, float], Awaitable[T]],
        *,
        read_only: bool,
    ) -> T:
        """Acquire, open the limited transaction, do the work, roll back (or commit a write),
        and translate every driver error on the way."""
        timeout_ms = limits.statement_timeout_ms
        pool = await self._ready_pool(timeout_ms)
        deadline = time.monotonic() + timeout_ms / 1000
        try:
            conn = await pool.acquire(timeout=timeout_ms / 1000)
        except TimeoutError:
            raise busy_error(self.name) from None
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as error:
            raise postgres_error(error, database=self.name, timeout_ms=timeout_ms) from None
        committed = False
        try:
            try:
                await conn.execute(_begin_sql(read_only=read_only, timeout_ms=timeout_ms))
                result = await work(conn, deadline)
                if not read_only:
                    await conn.execute("COMMIT")
                    committed = True
            finally:
                if not committed:
                    await _rollback(conn)
            return result
        except BastionError:
            raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
            raise postgres_error(error, database=self.name, timeout_ms=timeout_ms) from None
        finally:
            try:
                await pool.release(conn)
            except Exception:
                # release terminated the connection after a failed reset; the pool replaces it
                log.debug("database %s: a connection was dropped after a failed reset", self.name)

    async def fetch_read(self, sql: str, limits: ExecutionLimits) -> QueryResult:
        async def work(conn: asyncpg.Connection, deadline: float) -> QueryResult:
            statement = await _prepare(conn, sql, limits, deadline, self.name)
            columns = _columns(statement)
            cursor = await statement.cursor(timeout=_client_timeout(deadline, limits.statement_timeout_ms))
            got = await _collect(cursor, _RowSizer(statement.get_attributes()), limits, deadline)
            return QueryResult(
                columns=columns,
                rows=got.rows,
                row_count=len(got.rows),
                truncated=got.truncated_by is not None,
                truncated_by=got.truncated_by,
            )

        return await self._run(limits, work, read_only=True)

    async def explain(self, sql: str, limits: ExecutionLimits) -> list[str]:
        async def work(conn: asyncpg.Connection, deadline: float) -> list[str]:
            # never ANALYZE: with options in parentheses, what follows must be a statement, so
            # "ANALYZE" in the caller's text is a syntax error, not an option
            statement = await _prepare(conn, f"EXPLAIN (FORMAT TEXT) {sql}", limits, deadline, self.name)
            rows = await statement.fetch(timeout=_client_timeout(deadline, limits.statement_timeout_ms))
            return [row[0] for row in rows]

        return await self._run(limits, work, read_only=True)

    async def execute_write(self, sql: str, limits: ExecutionLimits) -> QueryResult:
        """Run one write in a read-write transaction with the same timeout, and commit. RETURNING
        rows are capped like a read's; the rest are counted, not fetched."""
        if self.config.read_only:
            raise QueryFailed(
                f"database {self.name} is configured read-only",
                hint=f"The operator must set databases.{self.name}.read_only: false to allow writes.",
                sqlstate="25006",
            )

        async def work(conn: asyncpg.Connection, deadline: float) -> QueryResult:
            statement = await _prepare(conn, sql, limits, deadline, self.name)
            timeout_ms = limits.statement_timeout_ms
            if not statement.get_attributes():
                await statement.fetch(timeout=_client_timeout(deadline, timeout_ms))
                affected = _affected_rows(statement.get_statusmsg())
                return QueryResult(columns=(), rows=[], row_count=0, affected_rows=affected)
            cursor = await statement.cursor(timeout=_client_timeout(deadline, timeout_ms))
            got = await _collect(cursor, _RowSizer(statement.get_attributes()), limits, deadline)
            while not got.exhausted:
                moved = await cursor.forward(FORWARD_STEP, timeout=_client_timeout(deadline, timeout_ms))
                got.consumed += moved
                got.exhausted = moved < FORWARD_STEP
            return QueryResult(
                columns=_columns(statement),
                rows=got.rows,
                row_count=len(got.rows),
                truncated=got.truncated_by is not None,
                truncated_by=got.truncated_by,
                affected_rows=got.consumed,
            )

        return await self._run(limits, work, read_only=False)

    # catalog

    async def catalog(self, *, refresh: bool = False) -> Catalog:
        if self._catalog is not None and not refresh:
            return self._catalog
        async with self._catalog_lock:
            if self._catalog is None or refresh:
                self._catalog = await self._read_catalog()
            return self._catalog

    async def _read_catalog(self) -> Catalog:
        """Four queries in one read-only snapshot, whatever the number of tables."""
        pool = await self._ready_pool(CATALOG_TIMEOUT_MS)
        try:
            async with (
                pool.acquire(timeout=CATALOG_TIMEOUT_MS / 1000) as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                await conn.execute(f"SET LOCAL statement_timeout = {CATALOG_TIMEOUT_MS}")
                head = await conn.fetchrow(_SCHEMAS_SQL)
                relations = await conn.fetch(_RELATIONS_SQL)
                columns = await conn.fetch(_COLUMNS_SQL)
                constraints = await conn.fetch(_CONSTRAINTS_SQL)
                user_code = await conn.fetchrow(_USER_CODE_SQL)
                inherits = await conn.fetch(_CHILDREN_SQL)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as error:
            raise postgres_error(error, database=self.name, timeout_ms=CATALOG_TIMEOUT_MS) from None
        assert head is not None
        self._search_path = tuple(head["search_path"])
        return Catalog(
            database=self.name,
            dialect=self.dialect,
            tables=_build_tables(relations, columns, constraints),
            search_path=self._search_path,
            schemas=tuple(head["schemas"]),
            user_functions=frozenset(user_code["functions"] or ()) if user_code else frozenset(),
            user_operators=frozenset(user_code["operators"] or ()) if user_code else frozenset(),
            children=_children_of(inherits),
        )
