"""Audit trail benchmarks: `python -m evals.bench.audit` prints Markdown for BENCHMARKS.md.

1. Appends under concurrency: 1, 10 and 50 callers appending at once to the PostgreSQL and SQLite
   stores; per-append latency (median, p99) and throughput, with group commit (what ships) and
   without it (one transaction per event, as before issue 7: the same store's single-event write,
   called concurrently).
2. What audit adds to a call: 10 and 50 concurrent governed `query` calls (a point lookup through
   the whole pipeline) with the PostgreSQL state store, against the same calls with a recorder that
   writes nothing. "Adds" is the difference of the median call latency; "audit stage" is the time
   the pipeline spent recording the event (waiting for its commit included).
3. `audit verify` over 1,000,000 events (`BASTION_BENCH_AUDIT_EVENTS` to change): the events are
   bulk-loaded with their real chain (computed here, not by the store, so loading is fast); only
   `verify_trail` is timed.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from evals.bench.common import ADMIN_DSN, BENCH_ROLE, machine_line, p99
from server.audit.chain import GENESIS_HASH, canonical_json, hashed_form, link_hash
from server.audit.event import AuditEvent, StoredEvent
from server.audit.verify import verify_trail
from server.store import StateStore, open_state_store
from server.store.base import prepare_event

CONCURRENCY = (1, 10, 50)
CALL_WIDTHS = (10, 50)
APPENDS = int(os.environ.get("BASTION_BENCH_AUDIT_APPENDS", "2000"))
CALL_ROUNDS = int(os.environ.get("BASTION_BENCH_AUDIT_ROUNDS", "40"))
VERIFY_EVENTS = int(os.environ.get("BASTION_BENCH_AUDIT_EVENTS", "1000000"))
LOAD_CHUNK = 20_000


def sample_event(n: int = 0, moment: datetime | None = None) -> AuditEvent:
    """A realistic allowed read: every field an event of a real call carries."""
    return AuditEvent(
        id=str(uuid.uuid4()),
        time=moment or datetime.now(UTC),
        tool="query",
        decision="allow",
        session_id="b7c4c1f2-6a7e-4c39-9d55-2f3f2c1d9a11",
        transport="http",
        client_name="claude-code",
        client_version="2.1.0",
        agent_id=f"agent-{n % 50}",
        groups=("analytics",),
        on_behalf_of="alice@example.com",
        auth_method="oauth",
        arguments={"sql": f"SELECT id, email, country FROM customers WHERE id = {n}", "purpose": "weekly report"},
        purpose="weekly report",
        conversation_id="conv-7f3a",
        request_meta={"bastion/conversation_id": "conv-7f3a", "bastion/user_prompt_excerpt": "churn by country"},
        database="main",
        statement_kind="select",
        tables=("public.customers",),
        columns=("country", "email", "id"),
        pii_columns=("public.customers.email",),
        masked_columns=("public.customers.email",),
        masked_cells={"email": 1},
        policy_ids=("default-read", "default-pii-masked"),
        policy_version="58203043bfb20247",
        reasons=("reads are allowed",),
        row_count=1,
        truncated=False,
        duration_ms=1.234,
    )


# --- set-up ---------------------------------------------------------------------------------------


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _dsn(database: str, *, search_path: str | None = None) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(ADMIN_DSN)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{BENCH_ROLE}@{host}" + (f":{parts.port}" if parts.port else "")
    query = f"search_path={search_path}" if search_path else ""
    return urlunsplit(parts._replace(netloc=netloc, path=f"/{database}", query=query))


async def create_database() -> str:
    name = f"bastion_bench_audit_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(ADMIN_DSN)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", BENCH_ROLE):
            await conn.execute(f'CREATE ROLE "{BENCH_ROLE}" LOGIN NOSUPERUSER NOBYPASSRLS')
        await conn.execute(f'CREATE DATABASE "{name}" OWNER "{BENCH_ROLE}"')
    finally:
        await conn.close()
    app = await asyncpg.connect(_dsn(name))
    try:
        await app.execute(
            "CREATE TABLE customers (id integer PRIMARY KEY, email text, country text);"
            "INSERT INTO customers SELECT i, 'c' || i || '@example.com', 'DE' FROM generate_series(1, 1000) i;"
        )
    finally:
        await app.close()
    return name


async def new_schema(database: str) -> str:
    schema = f"s_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(_dsn(database))
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()
    return _dsn(database, search_path=schema)


# --- 1. appends -----------------------------------------------------------------------------------


async def _appends(append: Callable[[AuditEvent], Awaitable[Any]], concurrency: int) -> dict[str, float]:
    latencies: list[float] = []

    async def one(n: int) -> None:
        started = time.perf_counter()
        await append(sample_event(n))
        latencies.append((time.perf_counter() - started) * 1000)

    for n in range(min(20, APPENDS)):  # warm-up
        await one(n)
    latencies.clear()
    rounds = max(1, APPENDS // concurrency)
    started = time.perf_counter()
    for r in range(rounds):
        await asyncio.gather(*(one(r * concurrency + i) for i in range(concurrency)))
    wall = time.perf_counter() - started
    return {
        "median_ms": statistics.median(latencies),
        "p99_ms": p99(latencies),
        "per_second": len(latencies) / wall,
        "amortized_ms": wall * 1000 / len(latencies),
    }


def _one_transaction_each(store: StateStore) -> Callable[[AuditEvent], Awaitable[list[StoredEvent]]]:
    """The write path without group commit: each event its own transaction, concurrently."""

    async def append(event: AuditEvent) -> list[StoredEvent]:
        return await store._write_batch([prepare_event(event)])  # type: ignore[attr-defined,no-any-return]

    return append


async def measure_appends(state_dsns: dict[str, str], base_dir: str) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for backend, dsn in state_dsns.items():
        for mode in ("group commit", "one transaction per event"):
            store = await open_state_store(dsn, base_dir=base_dir)
            try:
                append = store.append_audit if mode == "group commit" else _one_transaction_each(store)
                for concurrency in CONCURRENCY:
                    figures[f"{backend}|{mode}|{concurrency}"] = await _appends(append, concurrency)
                group = store.group_commit  # type: ignore[attr-defined]
                if mode == "group commit":
                    figures[f"{backend}|batch"] = group.events / max(group.transactions, 1)
            finally:
                await store.close()
    return figures


# --- 2. what audit adds to a call -------------------------------------------------------------------


class _NullRecorder:
    async def record(self, event: AuditEvent) -> None:
        return None


class _OneTransactionRecorder:
    def __init__(self, store: StateStore) -> None:
        self.append = _one_transaction_each(store)

    async def record(self, event: AuditEvent) -> None:
        await self.append(event)


async def measure_calls(database: str, state_dsn: str, state_dir: str, width: int = 50) -> dict[str, Any]:
    from server.app import RuntimeHolder
    from server.config import parse_config
    from server.identity.agent import ClientInfo, TransportInfo
    from server.pipeline import QUERY, ToolCall, run

    config = parse_config(
        {
            "databases": {"main": {"dsn": _dsn(database), "max_rows": 100}},
            "state": {"dsn": state_dsn},
            "identity": {"stdio_agent": "bench-agent"},
        },
        base_dir=state_dir,
    )

    def call(n: int) -> ToolCall:
        sql = f"SELECT id, country FROM customers WHERE id = {1 + n % 1000}"
        return ToolCall(
            tool="query",
            arguments={"sql": sql, "purpose": "bench"},
            transport=TransportInfo("http", f"session-{n % 50}", ClientInfo("bench", "1")),
            sql=sql,
            purpose="bench",
        )

    figures: dict[str, Any] = {}
    async with RuntimeHolder(config, "http").use() as runtime:
        recorders = {
            "no audit": _NullRecorder(),
            "audit, group commit": runtime.recorder,
            "audit, one transaction per event": _OneTransactionRecorder(runtime.store),  # type: ignore[arg-type]
        }
        samples: dict[str, list[float]] = {label: [] for label in recorders}
        stage: dict[str, list[float]] = {label: [] for label in recorders}
        walls: dict[str, float] = dict.fromkeys(recorders, 0.0)
        cpu: dict[str, float] = dict.fromkeys(recorders, 0.0)

        async def one(n: int, into: list[float], audit: list[float]) -> None:
            started = time.perf_counter()
            state = await run(runtime, call(n), QUERY)
            into.append((time.perf_counter() - started) * 1000)
            audit.append(state.timings.get("audit", 0.0))

        labels = list(recorders)
        for r in range(CALL_ROUNDS + 1):
            # the modes take turns round by round, so drift on a shared machine hits them alike
            for label in labels[r % 3 :] + labels[: r % 3]:
                runtime.recorder = recorders[label]  # type: ignore[assignment]
                warm = r == 0  # round 0 warms caches and pools
                into, audit = ([], []) if warm else (samples[label], stage[label])
                started, cpu_started = time.perf_counter(), time.process_time()
                await asyncio.gather(*(one(r * width + i, into, audit) for i in range(width)))
                if not warm:
                    walls[label] += time.perf_counter() - started
                    cpu[label] += time.process_time() - cpu_started
        for label, latencies in samples.items():
            figures[label] = {
                "median_ms": statistics.median(latencies),
                "p99_ms": p99(latencies),
                "per_second": len(latencies) / walls[label],
                "audit_stage_ms": statistics.median(stage[label]),
                "cpu_us": cpu[label] / len(latencies) * 1e6,
            }
    return figures


# --- 3. verify ------------------------------------------------------------------------------------


def chained_rows(count: int, start: datetime) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of a `count`-event trail with its real chain, `LOAD_CHUNK` at a time."""
    template = sample_event().to_record()
    prev = GENESIS_HASH
    chunk: list[tuple[Any, ...]] = []
    for sequence in range(1, count + 1):
        moment = start + timedelta(milliseconds=sequence * 10)
        record = dict(template)
        record["id"] = f"bench-{sequence}"
        record["time"] = moment.isoformat()
        record["agent_id"] = f"agent-{sequence % 50}"
        record["arguments"] = {"sql": f"SELECT id, email FROM customers WHERE id = {sequence}", "purpose": "bench"}
        record_json = canonical_json(record)
        hash_ = link_hash(canonical_json(hashed_form(record)), sequence, prev)
        chunk.append((sequence, record["id"], moment, record["agent_id"], "query", "allow", "main", "select",
                      record_json, prev, hash_))  # fmt: skip
        prev = hash_
        if len(chunk) == LOAD_CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


COLUMNS = ["sequence", "id", "time", "agent_id", "tool", "decision", "database", "statement_kind", "record",
           "prev_hash", "hash"]  # fmt: skip


async def load_postgres(dsn: str, count: int) -> float:
    store = await open_state_store(dsn, base_dir=".")
    await store.close()
    conn = await asyncpg.connect(dsn)
    started = time.perf_counter()
    try:
        last: tuple[Any, ...] = ()
        for chunk in chained_rows(count, datetime(2026, 1, 1, tzinfo=UTC)):
            await conn.copy_records_to_table("audit_events", records=chunk, columns=COLUMNS)
            last = chunk[-1]
        await conn.execute("UPDATE audit_chain_head SET sequence = $1, hash = $2 WHERE id = 1", last[0], last[10])
        await conn.execute("VACUUM ANALYZE audit_events")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def load_sqlite(path: Path, count: int) -> float:
    import sqlite3

    store = await open_state_store(f"sqlite:///{path}", base_dir="/")
    await store.close()
    started = time.perf_counter()
    conn = sqlite3.connect(path)
    try:
        last: tuple[Any, ...] = ()
        for chunk in chained_rows(count, datetime(2026, 1, 1, tzinfo=UTC)):
            rows = [(*row[:2], row[2].strftime("%Y-%m-%dT%H:%M:%S.%fZ"), *row[3:]) for row in chunk]
            conn.executemany(f"INSERT INTO audit_events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * 11)})", rows)
            last = chunk[-1]
        conn.execute("UPDATE audit_chain_head SET sequence = ?, hash = ? WHERE id = 1", (last[0], last[10]))
        conn.commit()
    finally:
        conn.close()
    return time.perf_counter() - started


async def measure_verify(dsn: str, sqlite_path: Path, count: int) -> dict[str, Any]:
    figures: dict[str, Any] = {"events": count}
    for backend, load, target in (("postgres", load_postgres, dsn), ("sqlite", load_sqlite, sqlite_path)):
        figures[f"{backend}|load_s"] = await load(target, count)  # type: ignore[operator]
        store = await open_state_store(dsn if backend == "postgres" else f"sqlite:///{sqlite_path}", base_dir="/")
        try:
            started = time.perf_counter()
            verification = await verify_trail(store)
            figures[f"{backend}|verify_s"] = time.perf_counter() - started
            figures[f"{backend}|summary"] = verification.summary()
        finally:
            await store.close()
    return figures


# --- all ------------------------------------------------------------------------------------------


async def measure_async() -> dict[str, Any]:
    database = await create_database()
    try:
        with tempfile.TemporaryDirectory() as state_dir:
            appends = await measure_appends(
                {"postgres": await new_schema(database), "sqlite": "sqlite:///appends.db"}, state_dir
            )
            calls = {
                width: await measure_calls(database, await new_schema(database), state_dir, width)
                for width in CALL_WIDTHS
            }
            verify = await measure_verify(await new_schema(database), Path(state_dir) / "verify.db", VERIFY_EVENTS)
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return {"appends": appends, "calls": calls, "verify": verify}


def measure() -> dict[str, Any]:
    return asyncio.run(measure_async())


def report(figures: dict[str, Any]) -> str:
    appends, calls, verify = figures["appends"], figures["calls"], figures["verify"]
    lines = [
        "Targets: with 50 concurrent calls, audit adds under 1 ms at the median per call on PostgreSQL; "
        "`audit verify` checks 1,000,000 events in under 60 s.",
        "",
        f"**Appends** ({APPENDS} per row; latency of one `append_audit`, committed and flushed):",
        "",
        "| store | mode | concurrent | median (ms) | p99 (ms) | appends/s | wall time per append (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for backend in ("postgres", "sqlite"):
        for mode in ("one transaction per event", "group commit"):
            for concurrency in CONCURRENCY:
                f = appends[f"{backend}|{mode}|{concurrency}"]
                lines.append(
                    f"| {backend} | {mode} | {concurrency} | {f['median_ms']:.2f} | {f['p99_ms']:.2f} "
                    f"| {f['per_second']:,.0f} | {f['amortized_ms']:.3f} |"
                )
    lines += [
        "",
        "Mean events per group commit over the runs above: "
        + ", ".join(f"{b} {appends[f'{b}|batch']:.1f}" for b in ("postgres", "sqlite"))
        + ".",
        "",
        f"**What audit adds to a call** (10 and 50 concurrent governed `query` point lookups, {CALL_ROUNDS} "
        "rounds each, the modes taking turns round by round; PostgreSQL state store; one event loop):",
        "",
        "| concurrent | recorder | median call (ms) | p99 call (ms) | calls/s | audit adds at the median (ms) "
        "| audit stage, median (ms) | CPU per call (µs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for width, by_recorder in calls.items():
        base = by_recorder["no audit"]["median_ms"]
        for label, f in by_recorder.items():
            added = "—" if label == "no audit" else f"{f['median_ms'] - base:+.2f}"
            lines.append(
                f"| {width} | {label} | {f['median_ms']:.2f} | {f['p99_ms']:.2f} | {f['per_second']:,.0f} | {added} "
                f"| {f['audit_stage_ms']:.2f} | {f['cpu_us']:.0f} |"
            )
    lines += [
        "",
        f"**Verify** ({verify['events']:,} events, loaded in bulk with their real chain; only verification timed):",
        "",
        "| store | verify (s) | events/s | result |",
        "|---|---|---|---|",
    ]
    for backend in ("postgres", "sqlite"):
        seconds = verify[f"{backend}|verify_s"]
        lines.append(
            f"| {backend} | {seconds:.1f} | {verify['events'] / seconds:,.0f} | {verify[f'{backend}|summary']} |"
        )
    lines += ["", "Command: `python -m evals.bench.audit`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    result = measure()
    print(f"Machine: {machine_line()}.\n")
    print(report(result))
