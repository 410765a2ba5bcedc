"""The audit trail in the state store, on SQLite and on the real PostgreSQL.

Every PostgreSQL test gets a schema of its own in the module's scratch database (through the DSN's
`search_path`), so each starts from an empty trail without the cost of a database per test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import math
import sqlite3
import sys
import textwrap
import uuid
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from server.audit.chain import (
    GENESIS_HASH,
    ChainHead,
    chain_hash,
    hashed_json,
    link_hash,
    record_of,
    verify_chain,
)
from server.audit.event import AuditEvent, StoredEvent
from server.errors import ConfigError
from server.store import StateStore, StoreError, open_state_store, sqlite_file
from server.store.migrations import LATEST_VERSION
from server.store.sqlite import SQLiteStore
from tests.conftest import APP_ROLE, ScratchDatabase

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 7, 28, 9, 0, tzinfo=UTC)


def make_event(n: int = 1, **changes: Any) -> AuditEvent:
    """An event with every field set to something other than its default."""
    event = AuditEvent(
        id=f"evt-{n}-{uuid.uuid4().hex[:8]}",
        time=T0 + timedelta(minutes=n),
        tool="query",
        decision="allow",
        session_id="session-1",
        transport="stdio",
        client_name="claude-code",
        client_version="2.1.0",
        agent_id=f"agent-{n}",
        groups=("analytics", "readers"),
        on_behalf_of="alice@example.com",
        auth_method="stdio",
        token_jti="jti-123",
        token_sub="user-42",
        arguments={"sql": "SELECT name FROM customers WHERE city = 'Zürich'", "max_rows": 10, "x": [1, None]},
        purpose="weekly churn report",
        conversation_id="conv-42",
        request_meta={"bastion/conversation_id": "conv-42", "traceparent": "00-abc-def-01"},
        database="main",
        statement_kind="select",
        tables=("public.customers",),
        columns=("public.customers.name", "public.customers.city"),
        pii_columns=("public.customers.name",),
        masked_columns=("public.customers.name",),
        masked_cells={"name": 3},
        policy_ids=("interim-reads",),
        policy_version="sha256:1234",
        reasons=("reads of the database's own tables are allowed",),
        approval_id="apr-7",
        approver="bob@example.com",
        row_count=3,
        truncated=False,
        duration_ms=1.25,
        error="none, really",
    )
    return replace(event, **changes)


@dataclass(frozen=True)
class Backend:
    """Where a test's store lives, and a way to reach its tables behind the store's back."""

    name: str
    dsn: str
    base_dir: Path

    async def open(self) -> StateStore:
        return await open_state_store(self.dsn, base_dir=str(self.base_dir))

    async def execute(self, *statements: str) -> None:
        """Run SQL directly, as someone tampering with the trail would (no placeholders, so the same
        text works on both)."""
        if self.name == "sqlite":
            conn = sqlite3.connect(sqlite_file(self.dsn, str(self.base_dir)), isolation_level=None)
            try:
                conn.execute("BEGIN")
                for statement in statements:
                    conn.execute(statement)
                conn.execute("COMMIT")
            finally:
                conn.close()
        else:
            conn = await asyncpg.connect(self.dsn)
            try:
                async with conn.transaction():
                    for statement in statements:
                        await conn.execute(statement)
            finally:
                await conn.close()

    async def fetchval(self, sql: str) -> Any:
        if self.name == "sqlite":
            conn = sqlite3.connect(sqlite_file(self.dsn, str(self.base_dir)))
            try:
                return conn.execute(sql).fetchone()[0]
            finally:
                conn.close()
        conn = await asyncpg.connect(self.dsn)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()


async def new_pg_schema(scratch_db: ScratchDatabase) -> str:
    """A DSN whose tables land in a fresh schema owned by the (unprivileged) application role."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(scratch_db.admin_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{schema}" AUTHORIZATION "{APP_ROLE}"')
    finally:
        await conn.close()
    return f"{scratch_db.app_dsn}?search_path={schema}"


async def append_many(store: StateStore, count: int, start: int = 1) -> list[StoredEvent]:
    return [await store.append_audit(make_event(n)) for n in range(start, start + count)]


async def assert_one_intact_chain(store: StateStore, count: int) -> None:
    events = await store.audit_events()
    assert [e.sequence for e in events] == list(range(1, count + 1))
    assert len({e.event.id for e in events}) == count
    assert verify_chain(events, head=await store.audit_chain_head()) is None


# --- appending and reading back ------------------------------------------------------------------


async def test_an_appended_event_reads_back_with_every_field(store: StateStore) -> None:
    event = make_event()
    for f in fields(AuditEvent):  # the fixture really exercises every field
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        assert getattr(event, f.name) != default, f.name

    stored = await store.append_audit(event)
    (read,) = await store.audit_events()

    assert stored.event == event
    assert read == stored
    assert read.event.to_record() == event.to_record()
    assert isinstance(read.event.groups, tuple)
    assert read.event.time.tzinfo is not None


async def test_the_first_event_follows_the_genesis_and_sequences_have_no_gaps(store: StateStore) -> None:
    stored = await append_many(store, 10)

    assert stored[0].prev_hash == GENESIS_HASH
    assert [s.sequence for s in stored] == list(range(1, 11))
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(stored))
    assert await store.audit_chain_head() == ChainHead(10, stored[-1].hash)
    await assert_one_intact_chain(store, 10)


async def test_an_event_in_another_zone_is_stored_in_utc(store: StateStore) -> None:
    zurich = datetime(2026, 7, 28, 13, 0, tzinfo=timezone(timedelta(hours=2)))
    stored = await store.append_audit(make_event(time=zurich))

    (read,) = await store.audit_events()
    assert read.event.time == zurich
    assert read.event.time.utcoffset() == timedelta(0)
    assert stored == read


async def test_nested_tuples_come_back_as_read_and_still_verify(store: StateStore) -> None:
    stored = await store.append_audit(make_event(arguments={"ids": (1, 2), "text": "Ünïcode \ud800 \x00"}))

    (read,) = await store.audit_events()
    assert read == stored
    assert read.event.arguments == {"ids": [1, 2], "text": "Ünïcode \ud800 \x00"}
    assert verify_chain([read]) is None


async def test_a_duplicate_event_id_is_refused_and_leaves_no_gap(store: StateStore) -> None:
    first = make_event(1)
    await store.append_audit(first)

    with pytest.raises(StoreError):
        await store.append_audit(replace(first, agent_id="other"))
    await store.append_audit(make_event(2))

    await assert_one_intact_chain(store, 2)


async def test_an_event_that_is_not_json_is_refused_before_anything_is_written(store: StateStore) -> None:
    with pytest.raises(StoreError, match="JSON"):
        await store.append_audit(make_event(duration_ms=math.nan))
    with pytest.raises(StoreError, match="JSON"):
        await store.append_audit(make_event(arguments={"when": datetime.now(UTC)}))

    assert await store.audit_chain_head() == ChainHead(0, GENESIS_HASH)
    assert await store.audit_events() == []


# --- reading ranges and batches ------------------------------------------------------------------


async def test_time_ranges_include_since_and_exclude_until(store: StateStore) -> None:
    await append_many(store, 6)  # minutes 1..6 after T0

    between = await store.audit_events(since=T0 + timedelta(minutes=2), until=T0 + timedelta(minutes=5))
    assert [e.sequence for e in between] == [2, 3, 4]

    naive = await store.audit_events(since=(T0 + timedelta(minutes=5)).replace(tzinfo=None))
    assert [e.sequence for e in naive] == [5, 6]


async def test_newest_first_and_limit_pick_the_latest_events(store: StateStore) -> None:
    await append_many(store, 5)

    assert [e.sequence for e in await store.audit_events(limit=2)] == [1, 2]
    assert [e.sequence for e in await store.audit_events(limit=2, newest_first=True)] == [5, 4]
    assert [e.sequence for e in await store.last_audit_events(3)] == [3, 4, 5]
    assert await store.last_audit_events(0) == []
    assert [e.sequence for e in await store.last_audit_events(50)] == [1, 2, 3, 4, 5]


async def test_iterating_reads_the_whole_trail_in_batches(store: StateStore) -> None:
    await append_many(store, 10)

    every = [e.sequence async for e in store.iter_audit_events(batch_size=3)]
    later = [e.sequence async for e in store.iter_audit_events(since=T0 + timedelta(minutes=4), batch_size=3)]
    exact = [e.sequence async for e in store.iter_audit_events(batch_size=5)]

    assert every == list(range(1, 11))
    assert later == list(range(4, 11))
    assert exact == list(range(1, 11))


# --- concurrency ----------------------------------------------------------------------------------


async def test_fifty_concurrent_appends_form_one_linear_chain(store: StateStore) -> None:
    stored = await asyncio.gather(*(store.append_audit(make_event(n)) for n in range(50)))

    assert sorted(s.sequence for s in stored) == list(range(1, 51))
    await assert_one_intact_chain(store, 50)


async def test_two_store_instances_on_one_database_keep_one_chain(backend: Backend) -> None:
    first, second = await asyncio.gather(backend.open(), backend.open())
    try:
        await asyncio.gather(
            *(first.append_audit(make_event(n)) for n in range(30)),
            *(second.append_audit(make_event(n)) for n in range(30, 60)),
        )
        await assert_one_intact_chain(first, 60)
    finally:
        await first.close()
        await second.close()


APPENDER = textwrap.dedent(
    """
    import asyncio, sys, uuid
    from datetime import UTC, datetime
    from server.audit.event import AuditEvent
    from server.store import open_state_store

    async def main(dsn, base_dir, count):
        store = await open_state_store(dsn, base_dir=base_dir)
        try:
            await asyncio.gather(*(
                store.append_audit(AuditEvent(id=str(uuid.uuid4()), time=datetime.now(UTC), tool="query",
                                              decision="allow"))
                for _ in range(count)))
        finally:
            await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_separate_processes_appending_at_once_keep_one_chain(backend: Backend) -> None:
    # the schema exists before the race, as it would for servers sharing a deployed store
    store = await backend.open()
    try:
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", APPENDER, backend.dsn, str(backend.base_dir), "25", cwd=REPO
            )
            for _ in range(3)
        ]
        codes = await asyncio.gather(*(p.wait() for p in procs))
        assert codes == [0, 0, 0]
        await assert_one_intact_chain(store, 75)
    finally:
        await store.close()


# --- schema and opening ---------------------------------------------------------------------------


async def test_reopening_a_store_keeps_its_trail_and_migrates_once(backend: Backend) -> None:
    store = await backend.open()
    await append_many(store, 3)
    await store.close()

    store = await backend.open()
    try:
        await store.append_audit(make_event(4))
        await assert_one_intact_chain(store, 4)
    finally:
        await store.close()
    assert await backend.fetchval("SELECT count(*) FROM schema_version") == LATEST_VERSION


async def test_concurrent_opens_of_a_fresh_postgres_store_migrate_once(scratch_db: ScratchDatabase) -> None:
    dsn = await new_pg_schema(scratch_db)
    stores = await asyncio.gather(*(open_state_store(dsn, base_dir=".") for _ in range(4)))
    for store in stores:
        await store.close()

    backend = Backend("postgres", dsn, Path("."))
    assert await backend.fetchval("SELECT array_agg(version ORDER BY version) FROM schema_version") == list(
        range(1, LATEST_VERSION + 1)
    )


async def test_a_store_written_by_a_newer_bastion_is_refused(backend: Backend) -> None:
    await (await backend.open()).close()
    await backend.execute("INSERT INTO schema_version (version, description) VALUES (999, 'future')")

    with pytest.raises(StoreError, match="newer than this Bastion knows"):
        await backend.open()


async def test_a_relative_sqlite_store_is_created_under_base_dir(tmp_path: Path) -> None:
    store = await open_state_store("sqlite:///deep/er/state.db", base_dir=str(tmp_path))
    try:
        await store.append_audit(make_event())
    finally:
        await store.close()

    path = tmp_path / "deep" / "er" / "state.db"
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT count(*) FROM audit_events").fetchone()[0] == 1
    finally:
        conn.close()
    assert sqlite_file(f"sqlite:///{path}", "/elsewhere") == path


@pytest.mark.parametrize(
    "dsn",
    ["sqlite:///", "sqlite:///:memory:", "sqlite:///state.db?mode=ro", "mysql://root:hunter2@db/x"],
)
async def test_state_dsns_that_cannot_hold_a_trail_are_refused(dsn: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        await open_state_store(dsn, base_dir=str(tmp_path))
    assert "hunter2" not in str(caught.value)


async def test_a_sqlite_store_whose_folder_cannot_be_made_fails_to_open(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")

    with pytest.raises(StoreError, match="cannot open the SQLite state store"):
        await open_state_store("sqlite:///a-file/state.db", base_dir=str(tmp_path))


async def test_an_unreachable_postgres_fails_to_open_without_showing_its_password() -> None:
    with pytest.raises(StoreError) as caught:
        await open_state_store("postgresql://bastion:s3cret-pw@127.0.0.1:1/state", base_dir=".")

    assert "s3cret-pw" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert "bastion:***@127.0.0.1:1" in str(caught.value)


async def test_a_closed_store_refuses_further_calls(backend: Backend) -> None:
    store = await backend.open()
    await store.close()
    await store.close()  # idempotent

    with pytest.raises(StoreError, match="closed"):
        await store.append_audit(make_event())
    with pytest.raises(StoreError, match="closed"):
        await store.audit_events()


async def test_close_waits_for_an_append_in_flight(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "state.db")
    append = asyncio.create_task(store.append_audit(make_event()))
    await asyncio.sleep(0)
    await store.close()

    assert (await append).sequence == 1


# --- tampering ------------------------------------------------------------------------------------


async def test_an_edited_record_is_caught_at_its_sequence(store: StateStore, backend: Backend) -> None:
    await append_many(store, 5)
    await backend.execute(
        'UPDATE audit_events SET record = replace(record, \'"agent_id":"agent-3"\', '
        '\'"agent_id":"someone-else"\') WHERE sequence = 3'
    )

    events = await store.audit_events()
    assert events[2].event.agent_id == "someone-else"
    broken = verify_chain(events)
    assert broken is not None and broken.sequence == 3
    assert "altered" in broken.reason


async def test_a_deleted_event_is_caught_where_it_is_missing(store: StateStore, backend: Backend) -> None:
    await append_many(store, 5)
    await backend.execute("DELETE FROM audit_events WHERE sequence = 4")

    broken = verify_chain(await store.audit_events())
    assert broken is not None and broken.sequence == 4
    assert "missing" in broken.reason


async def test_a_deleted_tail_is_caught_against_the_chain_head(store: StateStore, backend: Backend) -> None:
    await append_many(store, 5)
    await backend.execute("DELETE FROM audit_events WHERE sequence >= 4")

    events = await store.audit_events()
    assert verify_chain(events) is None  # the links alone cannot show a cut tail...
    broken = verify_chain(events, head=await store.audit_chain_head())
    assert broken is not None and broken.sequence == 4  # ...the recorded head can
    assert "tail was deleted" in broken.reason


async def test_two_swapped_events_are_caught_at_the_first(store: StateStore, backend: Backend) -> None:
    await append_many(store, 5)
    await backend.execute(
        "UPDATE audit_events SET sequence = 1003 WHERE sequence = 4",
        "UPDATE audit_events SET sequence = 1004 WHERE sequence = 3",
        "UPDATE audit_events SET sequence = sequence - 1000 WHERE sequence > 1000",
    )

    events = await store.audit_events()
    assert [e.event.agent_id for e in events] == ["agent-1", "agent-2", "agent-4", "agent-3", "agent-5"]
    broken = verify_chain(events)
    assert broken is not None and broken.sequence == 3


async def test_an_inserted_event_is_caught_at_the_link_after_it(store: StateStore, backend: Backend) -> None:
    stored = await append_many(store, 5)
    # a forger who knows the algorithm links the fake to event 2 and renumbers what follows
    fake = make_event(99, agent_id="forger")
    fake_hash = chain_hash(fake, 3, stored[1].hash)
    record = hashed_json(fake.to_record()).replace("'", "''")  # any record text that parses will do
    await backend.execute(
        "UPDATE audit_events SET sequence = sequence + 1000 WHERE sequence >= 3",
        "UPDATE audit_events SET sequence = sequence - 999 WHERE sequence > 1000",
        "INSERT INTO audit_events (sequence, id, time, tool, decision, record, prev_hash, hash) VALUES "
        f"(3, 'fake', '2026-07-28T09:03:30.000000Z', 'query', 'allow', '{record}', "
        f"'{stored[1].hash}', '{fake_hash}')",
    )

    events = await store.audit_events()
    assert events[2].event.agent_id == "forger"
    broken = verify_chain(events)
    assert broken is not None and broken.sequence == 4
    assert "does not follow" in broken.reason


async def test_an_unreadable_record_names_its_sequence(store: StateStore, backend: Backend) -> None:
    await append_many(store, 3)
    await backend.execute("UPDATE audit_events SET record = '{\"extra\":1,' || substr(record, 2) WHERE sequence = 2")

    with pytest.raises(StoreError, match="audit event 2 cannot be read: unknown field"):
        await store.audit_events()


# --- the chain itself -----------------------------------------------------------------------------


def chain_of(*events: AuditEvent) -> list[StoredEvent]:
    stored: list[StoredEvent] = []
    prev = GENESIS_HASH
    for sequence, event in enumerate(events, start=1):
        hash_ = chain_hash(event, sequence, prev)
        stored.append(StoredEvent(sequence=sequence, prev_hash=prev, hash=hash_, event=event))
        prev = hash_
    return stored


def test_the_hash_writers_assemble_is_the_hash_verify_recomputes() -> None:
    event = make_event(arguments={"sql": "SELECT 'Grüße' -- \ud83d", "n": 1.5e-07})
    assert link_hash(hashed_json(event.to_record()), 7, "ab" * 32) == chain_hash(event, 7, "ab" * 32)


def test_the_fast_record_used_for_hashing_is_the_contract_record() -> None:
    for event in (make_event(), AuditEvent(id="x", time=T0, tool="query", decision="deny")):
        assert record_of(event) == event.to_record()
        assert list(record_of(event)) == list(event.to_record())


def test_a_field_added_later_at_its_default_leaves_old_hashes_alone() -> None:
    event = make_event(error=None, approval_id=None, tables=())
    record = event.to_record()
    assert hashed_json(record) == hashed_json({**record, "new_optional": None, "new_list": [], "new_map": {}})
    assert hashed_json(record) != hashed_json({**record, "new_optional": "set"})


def test_a_chain_that_starts_from_a_checkpoint_verifies_from_there() -> None:
    stored = chain_of(*(make_event(n) for n in range(1, 6)))

    assert verify_chain(stored[2:], start=ChainHead(2, stored[1].hash)) is None
    broken = verify_chain(stored[2:])
    assert broken is not None and broken.sequence == 1
    assert verify_chain([]) is None
    assert verify_chain([], head=ChainHead(0, GENESIS_HASH)) is None


def test_a_repeated_event_is_caught_as_out_of_place() -> None:
    stored = chain_of(*(make_event(n) for n in range(1, 4)))

    broken = verify_chain([stored[0], stored[1], stored[1], stored[2]])
    assert broken is not None and broken.sequence == 2
    assert "inserted or reordered" in broken.reason
    assert str(broken).startswith("at sequence 2: ")


async def test_postgres_sessions_that_would_not_wait_for_the_flush_are_made_to(
    scratch_db: ScratchDatabase,
) -> None:
    dsn = await new_pg_schema(scratch_db) + "&synchronous_commit=off"
    store = await open_state_store(dsn, base_dir=".")
    try:
        pool = store._pool  # type: ignore[attr-defined]  # the setting lives on the connections
        assert await pool.fetchval("SHOW synchronous_commit") == "on"
        await store.append_audit(make_event())
    finally:
        await store.close()
