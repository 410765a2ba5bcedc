"""A small shop schema in a scratch PostgreSQL database, the fixture most end-to-end tests use."""

from __future__ import annotations

import asyncpg

SHOP_SQL = """
CREATE TABLE customers (
    id integer PRIMARY KEY,
    full_name text NOT NULL,
    email text NOT NULL,
    country text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT '2026-01-01T00:00:00Z'
);
COMMENT ON TABLE customers IS 'People who bought something';
COMMENT ON COLUMN customers.email IS 'Primary contact address';
CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL, price numeric(10,2) NOT NULL);
CREATE TABLE orders (
    id integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers(id),
    product_id integer NOT NULL REFERENCES products(id),
    quantity integer NOT NULL,
    ordered_at date NOT NULL
);
CREATE VIEW order_totals AS
    SELECT o.customer_id, count(*) AS orders, sum(o.quantity * p.price) AS total
    FROM orders o JOIN products p ON p.id = o.product_id GROUP BY o.customer_id;
CREATE SCHEMA hr;
CREATE TABLE hr.employees (id integer PRIMARY KEY, full_name text, salary integer);
INSERT INTO customers (id, full_name, email, country)
    SELECT i, 'Customer ' || i, 'customer' || i || '@example.com',
           (ARRAY['DE','FR','US','JP'])[1 + i % 4]
    FROM generate_series(1, 40) AS i;
INSERT INTO products VALUES (1, 'Lamp', 19.99), (2, 'Desk', 249.00), (3, 'Chair', 89.50);
INSERT INTO orders SELECT i, 1 + i % 40, 1 + i % 3, 1 + i % 5, DATE '2026-01-01' + (i % 60)
    FROM generate_series(1, 200) AS i;
INSERT INTO hr.employees VALUES (1, 'Ada', 100000), (2, 'Grace', 120000);
CREATE TABLE big AS SELECT i AS id, md5(i::text) AS payload FROM generate_series(1, 20000) AS i;
"""


async def create_shop(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SHOP_SQL)
    finally:
        await conn.close()
