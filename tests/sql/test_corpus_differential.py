"""PostgreSQL itself as the oracle for the analyzer: it must never call a write a read.

Each file of the PostgreSQL 15 regression suite (`../shared/corpora/postgres_regress`, beside the
checkout) is replayed, statement by statement and in order, on a scratch database of its own, so
that the tables a file creates exist for its later statements. Before a statement runs for real
it is tried in a transaction of its own, `BEGIN READ ONLY; <statement>; ROLLBACK`: SQLSTATE 25006
(read_only_sql_transaction) means the server refused to let it write. A statement that fails for
any other reason is no evidence of a write; one that cannot run in a transaction block at all
(25001: VACUUM, CREATE DATABASE, ...) is no evidence either way, but the analyzer must not call it
a read. Then the statement runs for real, in autocommit; its errors are ignored, as psql ignores
them, and a transaction it leaves open is rolled back so that the next probe starts clean.

The analyzer cross-checks every statement with PostgreSQL's own parser (`server/sql/crosscheck.py`),
so a read that needs no rewrite runs as the text that was sent, not sqlglot's rendering of it: the
probe above is then exactly what the pipeline runs, and its outcome (rows, or the error) is the
unanalyzed run's. True reads that the cross-check refuses (sqlglot accepted them, PostgreSQL's
parser read them otherwise) are counted apart, with examples, to keep that price visible.

By default (`make test`) a fixed sample of files runs; `BASTION_CORPUS=all` replays every file
(`make test-corpus`). A handful of statements that act on the whole cluster (ALTER SYSTEM,
CREATE DATABASE, terminating backends, ...) are neither probed nor run: other sessions share this
server. Statements are bounded by a client-side timeout and each file by an overall budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest

from server.db import postgres as pg_backend
from server.db.base import Catalog
from server.errors import SQLRejected
from server.sql.analyzer import analyze
from server.sql.crosscheck import REFUSAL
from server.sql.lineage import lineage
from server.sql.statement import StatementKind
from tests.conftest import admin_dsn, create_scratch_database, drop_scratch_database
from tests.sql.corpus import CorpusStatement, ScriptReader, corpus_files

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]
CORPUS = REPO_ROOT.parent / "shared" / "corpora" / "postgres_regress"

# varied on purpose: writable CTEs, SELECT INTO, cursors, sequences, set-returning functions,
# user-defined functions that write, and plenty of plain reads
SAMPLE = (
    "with.sql",
    "select_into.sql",
    "select.sql",
    "join.sql",
    "aggregates.sql",
    "portals.sql",
    "rangefuncs.sql",
    "sequence.sql",
    "returning.sql",
)

STATEMENT_TIMEOUT_S = 5.0
HARD_TIMEOUT_S = STATEMENT_TIMEOUT_S + 3
FILE_BUDGET_S = float(os.environ.get("BASTION_CORPUS_FILE_BUDGET", "120"))
READ_ONLY_VIOLATION = "25006"
ACTIVE_TRANSACTION = "25001"

# statements that reach beyond the scratch database: never probed, never run
HAZARDS = re.compile(
    r"\b(pg_terminate_backend|pg_cancel_backend|pg_reload_conf|pg_rotate_logfile|pg_promote|"
    r"pg_switch_wal|pg_stat_reset\w*|lo_import|lo_export|pg_file_write)\b|"
    r"\b(alter\s+system|(create|drop|alter)\s+(database|tablespace|subscription))\b",
    re.IGNORECASE,
)


_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


def _selected_files() -> list[object]:
    if not CORPUS.is_dir():
        return [pytest.param(None, id="no-corpus", marks=pytest.mark.corpus)]
    if os.environ.get("BASTION_CORPUS") == "all":
        names = [path.name for path in corpus_files(CORPUS)]
    else:
        names = list(SAMPLE)
    return [pytest.param(name, id=name, marks=pytest.mark.corpus) for name in names]


@dataclass
class Tally:
    """What one file (or the whole run) showed; `leaks` must stay empty.

    A "true read" is a statement that ran in the read-only probe and that the analyzer does not
    call a write (PostgreSQL lets a read-only transaction write temporary tables, and BEGIN or
    COMMIT run there too: those are not reads). The share of true reads the analyzer allows is
    the price of failing closed (EXPLAIN, SET, cursors, user-defined functions, syntax sqlglot
    does not parse)."""

    statements: int = 0
    skipped: int = 0
    pg_writes: int = 0
    writes_caught: int = 0
    not_in_transaction: int = 0
    failed: int = 0
    timeouts: int = 0
    resets: int = 0
    true_reads: int = 0
    reads_allowed: int = 0
    #: true reads sqlglot accepted and PostgreSQL's parser read otherwise
    crosscheck_refused: int = 0
    #: allowed reads whose output lineage was checked against the server's result columns
    lineage_checked: int = 0
    lineage_inexact: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    refusals: Counter[str] = field(default_factory=Counter)
    leaks: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)
    crosscheck_examples: list[str] = field(default_factory=list)
    #: exact lineages whose width is not the result's (masking would trust a wrong alignment)
    lineage_mismatches: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        for name, value in vars(other).items():
            mine = getattr(self, name)
            if isinstance(mine, int):
                setattr(self, name, mine + value)
            elif isinstance(mine, Counter):
                mine.update(value)
            else:
                mine.extend(value)

    @property
    def share(self) -> float:
        return self.reads_allowed / self.true_reads if self.true_reads else 0.0

    def summary(self) -> str:
        return (
            f"{self.statements} statements ({self.skipped} cluster-wide ones not run); "
            f"{self.pg_writes} writes per PostgreSQL, {self.writes_caught} caught, {len(self.leaks)} let "
            f"through; {self.true_reads} true reads, {self.reads_allowed} allowed ({self.share:.1%}); "
            f"{self.not_in_transaction} cannot run in a transaction block; {self.failed} failed for other "
            f"reasons; {self.timeouts} timed out; {self.resets} connection resets; "
            f"{self.crosscheck_refused} true reads refused by the cross-check with PostgreSQL's parser "
            f"({self.crosscheck_share:.2%}); output lineage of {self.lineage_checked} allowed reads checked "
            f"against the server's columns, {len(self.lineage_mismatches)} of a different width, "
            f"{self.lineage_inexact} inexact (relations unknown to the catalog: all their columns scanned)"
        )

    @property
    def crosscheck_share(self) -> float:
        return self.crosscheck_refused / self.true_reads if self.true_reads else 0.0


TOTAL = Tally()
READ_VERDICTS = ("read", "refused")


def _verdict(sql: str) -> tuple[str, str]:
    """(`read`, another kind, or `refused`; the refusal's reason). Anything else raised is a bug."""
    try:
        statement = analyze(sql, "postgres")
    except SQLRejected as refusal:
        return "refused", refusal.message
    return ("read" if statement.kind is StatementKind.SELECT else statement.kind.value), ""


class Replayer:
    """One connection to the scratch database, replaying a script the way psql would.

    Every round trip is bounded: the server's statement_timeout stops slow statements, and a hard
    client-side limit catches the rest (a COPY waiting for data, a lost cancel request) by dropping
    the connection; the next statement then starts a fresh session."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn: asyncpg.Connection | None = None
        self.resets = 0
        #: the scratch database's catalog, read again after anything that may change it
        self._catalog: Catalog | None = None

    def schema_may_change(self) -> None:
        self._catalog = None

    async def catalog(self) -> Catalog:
        """The catalog as Bastion's PostgreSQL backend reads it (its own queries)."""
        if self._catalog is None:
            conn = await self.connect()
            head = await self._bounded(conn.fetchrow(pg_backend._SCHEMAS_SQL))
            relations = await self._bounded(conn.fetch(pg_backend._RELATIONS_SQL))
            columns = await self._bounded(conn.fetch(pg_backend._COLUMNS_SQL))
            constraints = await self._bounded(conn.fetch(pg_backend._CONSTRAINTS_SQL))
            assert head is not None
            self._catalog = Catalog(
                database="corpus",
                dialect="postgres",
                tables=pg_backend._build_tables(relations, columns, constraints),
                search_path=tuple(head["search_path"]),
                schemas=tuple(head["schemas"]),
            )
        return self._catalog

    async def width(self, sql: str) -> int | None:
        """The number of columns the server's result has, prepared read-only (None: it fails)."""
        try:
            conn = await self.connect()
            await self._bounded(conn.execute("BEGIN READ ONLY"))
            prepared = await self._bounded(conn.prepare(sql))
            return len(prepared.get_attributes())
        except (asyncpg.PostgresError, asyncpg.exceptions.InternalClientError, TimeoutError):
            return None  # the client cannot describe some results (types it cannot resolve)
        except (asyncpg.InterfaceError, OSError):
            self._drop()
            return None
        finally:
            await self._settle()

    async def connect(self) -> asyncpg.Connection:
        if self.conn is None or self.conn.is_closed():
            self.conn = await asyncpg.connect(
                self.dsn,
                timeout=10,
                server_settings={"statement_timeout": str(int(STATEMENT_TIMEOUT_S * 1000))},
            )
        return self.conn

    def _drop(self) -> None:
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None
            self.resets += 1

    async def close(self) -> None:
        if self.conn is not None and not self.conn.is_closed():
            await asyncio.wait_for(self.conn.close(), 5)

    async def _bounded(self, awaitable: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(awaitable, HARD_TIMEOUT_S)
        except TimeoutError:
            self._drop()
            raise

    async def _send(self, statement: CorpusStatement, copy_data: str | None) -> bool:
        """Run one statement; True if the server consumed the COPY data."""
        conn = await self.connect()
        if copy_data is None:
            await self._bounded(conn.execute(statement.sql))
            return False
        consumed = False

        async def source() -> AsyncIterator[bytes]:
            nonlocal consumed
            consumed = True
            yield copy_data.encode()

        # asyncpg's public COPY helpers build their own statement; the script's is replayed as is
        await self._bounded(conn._copy_in(statement.sql, source(), None))
        return consumed

    async def probe(self, statement: CorpusStatement, copy_data: str | None) -> str | None:
        """The SQLSTATE of the statement in a read-only transaction (None: it ran)."""
        try:
            conn = await self.connect()
            await self._bounded(conn.execute("BEGIN READ ONLY"))
            await self._send(statement, copy_data)
            return None
        except asyncpg.PostgresError as error:
            return error.sqlstate
        except TimeoutError:
            return "timeout"
        except (asyncpg.InterfaceError, OSError):
            self._drop()
            return "connection"
        finally:
            await self._settle()

    async def run(self, statement: CorpusStatement, copy_data: str | None) -> bool:
        """Run the statement for real; True if the server consumed the COPY data."""
        try:
            return await self._send(statement, copy_data)
        except (asyncpg.PostgresError, TimeoutError):
            return False
        except (asyncpg.InterfaceError, OSError):
            self._drop()
            return False
        finally:
            await self._settle()

    async def _settle(self) -> None:
        """Leave the connection outside any transaction, or drop it if that fails."""
        if self.conn is None:
            return
        try:
            if self.conn.is_in_transaction():
                await self._bounded(self.conn.execute("ROLLBACK"))
        except Exception:  # whatever broke the connection, a fresh one replaces it
            self._drop()


async def _roles() -> set[str]:
    conn = await asyncpg.connect(admin_dsn())
    try:
        return {row["rolname"] for row in await conn.fetch("SELECT rolname FROM pg_roles")}
    finally:
        await conn.close()


async def _drop_new_roles(before: set[str]) -> None:
    """The corpus creates regress_* roles, which outlive the scratch database."""
    created = sorted(role for role in await _roles() - before if role.startswith("regress"))
    conn = await asyncpg.connect(admin_dsn())
    try:
        for role in created:
            with contextlib.suppress(asyncpg.PostgresError):  # still referenced: harmless later
                await conn.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await conn.close()


async def _replay_file(path: Path, dsn: str) -> Tally:
    tally = Tally()
    replayer = Replayer(dsn)
    deadline = time.monotonic() + FILE_BUDGET_S
    try:
        if path.name != "test_setup.sql":  # the suite's own set-up, which most files expect
            setup = ScriptReader((path.parent / "test_setup.sql").read_text(errors="replace"))
            for statement in setup:
                data = setup.peek_copy_data() if statement.copies_from_stdin else None
                if await replayer.run(statement, data):
                    setup.take_copy_data()
        reader = ScriptReader(path.read_text(errors="replace"))
        for statement in reader:
            if time.monotonic() > deadline:
                tally.unfinished.append(f"{path.name}:{statement.line} (file budget of {FILE_BUDGET_S:.0f}s)")
                break
            data = reader.peek_copy_data() if statement.copies_from_stdin else None
            if await _assess(path, statement, data, replayer, tally) != "read":
                replayer.schema_may_change()
            if await replayer.run(statement, data) and data is not None:
                reader.take_copy_data()
    finally:
        tally.resets += replayer.resets
        await replayer.close()
    return tally


async def _assess(path: Path, statement: CorpusStatement, data: str | None, replayer: Replayer, tally: Tally) -> str:
    """Probe one statement and tally the analyzer's verdict against the server's; the verdict."""
    tally.statements += 1
    where = f"{path.name}:{statement.line}"
    try:
        verdict, reason = _verdict(statement.sql)
    except Exception as error:  # the analyzer must refuse, never crash
        tally.crashes.append(f"{where}: {type(error).__name__}: {error}")
        verdict, reason = "crash", ""
    tally.verdicts[verdict] += 1
    if HAZARDS.search(_COMMENTS.sub(" ", statement.sql)):
        tally.skipped += 1
        if verdict == "read":
            tally.leaks.append(f"{where} (cluster-wide, never probed): {statement.sql[:200]!r}")
        return verdict
    # what the pipeline runs for a read is the text itself, so this probe is the governed run too
    sqlstate = await replayer.probe(statement, data)
    if sqlstate == READ_ONLY_VIOLATION:
        tally.pg_writes += 1
        if verdict == "read":
            tally.leaks.append(f"{where}: {statement.sql[:300]!r}")
        else:
            tally.writes_caught += 1
    elif sqlstate == ACTIVE_TRANSACTION:
        tally.not_in_transaction += 1
        if verdict == "read":
            tally.leaks.append(f"{where} (cannot run in a transaction block): {statement.sql[:200]!r}")
    elif sqlstate in ("timeout", "connection"):
        tally.timeouts += 1
    elif sqlstate is not None:
        tally.failed += 1
    elif verdict in READ_VERDICTS:
        tally.true_reads += 1
        tally.reads_allowed += verdict == "read"
        if verdict == "read":
            await _check_lineage_width(where, statement.sql, replayer, tally)
        if reason:
            tally.refusals[re.sub(r"[`'\"].*", "…", reason)[:70]] += 1
        if reason.startswith(REFUSAL):
            tally.crosscheck_refused += 1
            tally.crosscheck_examples.append(f"{where} [{reason[len(REFUSAL) + 2 :][:80]}]: {statement.sql[:120]!r}")
    return verdict


async def _check_lineage_width(where: str, sql: str, replayer: Replayer, tally: Tally) -> None:
    """Masking matches output lineage to the result by position: an exact lineage must have as
    many columns as the server's result (what `*` expands to, USING/NATURAL joins, functions)."""
    try:
        catalog = await replayer.catalog()
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
        return
    traced = lineage(analyze(sql, "postgres"), catalog)
    if not traced.exact:
        tally.lineage_inexact += 1
        return
    width = await replayer.width(sql)
    if width is None:
        return
    tally.lineage_checked += 1
    if width != len(traced.columns):
        tally.lineage_mismatches.append(f"{where} [server {width}, lineage {len(traced.columns)}]: {sql[:160]!r}")


@pytest.mark.parametrize("file_name", _selected_files())
async def test_analyzer_never_lets_a_write_through_as_a_read(file_name: str | None) -> None:
    if file_name is None:
        pytest.skip(f"the PostgreSQL regression corpus is not at {CORPUS} (it lives beside the checkout)")
    roles_before = await _roles()
    db = await create_scratch_database(prefix="bastion_corpus")
    try:
        tally = await _replay_file(CORPUS / file_name, db.admin_dsn)
    finally:
        await drop_scratch_database(db.name)
        await _drop_new_roles(roles_before)
    TOTAL.add(tally)
    print(f"{file_name}: {tally.summary()}")
    assert not tally.crashes, "the analyzer raised instead of refusing:\n" + "\n".join(tally.crashes)
    assert not tally.leaks, (
        f"{file_name}: PostgreSQL says these write, the analyzer called them reads ({tally.summary()}):\n"
        + "\n".join(tally.leaks)
    )


@pytest.mark.corpus
def test_corpus_report(capsys: pytest.CaptureFixture[str]) -> None:
    """Prints the figures of every file replayed in this run (it runs after them)."""
    if not TOTAL.statements:
        pytest.skip("no corpus file was replayed in this run")
    with capsys.disabled():
        print(f"\ncorpus differential: {TOTAL.summary()}")
        print(f"  analyzer verdicts: {dict(TOTAL.verdicts.most_common())}")
        print("  why true reads were refused:")
        for reason, count in TOTAL.refusals.most_common(25):
            print(f"    {count:6}  {reason}")
        for line in TOTAL.unfinished:
            print(f"  stopped early: {line}")
        for line in TOTAL.crosscheck_examples[:30]:
            print(f"  refused by the cross-check: {line}")
        for line in TOTAL.lineage_mismatches[:30]:
            print(f"  lineage of another width: {line}")
    assert not TOTAL.leaks, TOTAL.summary()
