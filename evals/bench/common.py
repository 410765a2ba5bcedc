"""Shared set-up for benchmarks: a scratch PostgreSQL database with data of known shape, timing helpers."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg

ADMIN_DSN = os.environ.get("BASTION_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
BENCH_ROLE = "bastion_bench_app"

BENCH_SCHEMA = """
CREATE TABLE customers (id integer PRIMARY KEY, full_name text, email text, country text, segment text,
                        created_at timestamptz, score numeric(8,2), active boolean, notes text);
CREATE TABLE products (id integer PRIMARY KEY, name text, category text, price numeric(10,2));
CREATE TABLE orders (id integer PRIMARY KEY, customer_id integer REFERENCES customers(id),
                     product_id integer REFERENCES products(id), quantity integer, ordered_at date);
INSERT INTO customers SELECT i, 'Customer ' || i, 'c' || i || '@example.com',
    (ARRAY['DE','FR','US','JP','BR'])[1 + i % 5], (ARRAY['smb','mid','ent'])[1 + i % 3],
    timestamptz '2026-01-01' + i * interval '1 minute', (i % 1000) / 10.0, i % 2 = 0, md5(i::text)
    FROM generate_series(1, 20000) AS i;
INSERT INTO products SELECT i, 'Product ' || i, (ARRAY['a','b','c','d'])[1 + i % 4], 1 + (i % 500)
    FROM generate_series(1, 500) AS i;
INSERT INTO orders SELECT i, 1 + i % 20000, 1 + i % 500, 1 + i % 7, date '2026-01-01' + (i % 300)
    FROM generate_series(1, 100000) AS i;
CREATE TABLE million AS SELECT i AS id, md5(i::text) AS payload, i % 97 AS bucket
    FROM generate_series(1, 1000000) AS i;
ANALYZE;
"""

POINT_LOOKUP = "SELECT id, full_name, email, country FROM customers WHERE id = 4242"
JOIN_AGGREGATE = """SELECT c.country, p.category, count(*) AS orders, sum(o.quantity * p.price) AS revenue
FROM orders o JOIN customers c ON c.id = o.customer_id JOIN products p ON p.id = o.product_id
WHERE o.ordered_at >= date '2026-03-01' GROUP BY c.country, p.category ORDER BY revenue DESC"""
SCAN_10K = "SELECT id, country, segment, created_at, score, active FROM customers WHERE id <= 10000"
SCAN_10K_PII = (
    "SELECT id, full_name, email, country, segment, created_at, score, active, notes FROM customers WHERE id <= 10000"
)
SCAN_1K_9COLS = (
    "SELECT id, full_name, email, country, segment, created_at, score, active, notes FROM customers WHERE id <= 1000"
)
MILLION = "SELECT id, payload, bucket FROM million"


@dataclass(frozen=True)
class BenchDatabase:
    name: str
    admin_dsn: str
    app_dsn: str


def _with_database(dsn: str, database: str, user: str | None = None) -> str:
    parts = urlsplit(dsn)
    netloc = parts.netloc
    if user is not None:
        host = parts.hostname or "127.0.0.1"
        netloc = f"{user}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(path=f"/{database}", netloc=netloc))


async def create_bench_database() -> BenchDatabase:
    name = f"bastion_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", BENCH_ROLE):
            await admin.execute(f'CREATE ROLE "{BENCH_ROLE}" LOGIN NOSUPERUSER NOBYPASSRLS')
        await admin.execute(f'CREATE DATABASE "{name}" OWNER "{BENCH_ROLE}"')
    finally:
        await admin.close()
    db = BenchDatabase(name, _with_database(ADMIN_DSN, name), _with_database(ADMIN_DSN, name, BENCH_ROLE))
    conn = await asyncpg.connect(db.app_dsn)
    try:
        await conn.execute(BENCH_SCHEMA)
    finally:
        await conn.close()
    return db


async def drop_bench_database(db: BenchDatabase) -> None:
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
    finally:
        await admin.close()


async def timed(fn: Callable[[], Awaitable[object]], *, repeat: int, warmup: int = 3) -> list[float]:
    """Milliseconds of each of `repeat` runs after `warmup` unmeasured ones."""
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = subprocess.run(
            ["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        cpu = model or cpu
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
