"""A generated PostgreSQL schema with PII where classification must find it, and look-alikes where
it must not.

PII sits in honestly named columns (in several naming styles), in unhelpfully named ones (`info`,
`x2`, `notes`, `val`), in a column only its comment explains, inside JSON, and in free text. Next to
it: amounts, order numbers, tracking ids, versions and statuses, as numbers and as text, which must
not be flagged. `EXPECTED` is the ground truth: the entity each column must get (FREE_TEXT for
columns whose values are scanned), or None.

`create_schema(dsn, copies=n)` builds the tables n times over (schemas s1..sn) for the 50-table
timing in evals/bench/masking.py.
"""

from __future__ import annotations

import json
import random

import asyncpg

from evals.pii_text import email, iban, ip, negative, phone, positive, ssn

ROWS = 150

EXPECTED: dict[tuple[str, str], str | None] = {
    # honest names, several styles
    ("customers", "id"): None,
    ("customers", "first_name"): "PERSON",
    ("customers", "lastName"): "PERSON",
    ("customers", "emailAddress"): "EMAIL_ADDRESS",
    ("customers", "e_mail_2"): "EMAIL_ADDRESS",
    ("customers", "mobile_no"): "PHONE_NUMBER",
    ("customers", "msisdn"): "PHONE_NUMBER",
    ("customers", "birth_date"): "DATE_OF_BIRTH",
    ("customers", "social_security_number"): "US_SSN",
    ("customers", "street_address"): "LOCATION",
    ("customers", "postcode"): "LOCATION",
    ("customers", "IPAddr"): "IP_ADDRESS",
    ("customers", "last_login"): "IP_ADDRESS",  # inet: the type says so
    ("customers", "cc_number"): "CREDIT_CARD",
    ("customers", "iban"): "IBAN_CODE",
    ("customers", "email_verified"): None,
    ("customers", "email_template_id"): None,
    ("customers", "external_id"): None,
    ("customers", "created_at"): None,
    ("customers", "lifetime_value"): None,
    ("customers", "order_count"): None,
    ("customers", "c1"): "PHONE_NUMBER",  # only the comment says so
    # unhelpful names
    ("misc", "id"): None,
    ("misc", "info"): "FREE_TEXT",  # JSON with an email, a phone and a name inside
    ("misc", "x2"): "PHONE_NUMBER",
    ("misc", "x3"): "EMAIL_ADDRESS",
    ("misc", "x4"): "CREDIT_CARD",
    ("misc", "x5"): "IP_ADDRESS",
    ("misc", "x6"): "IBAN_CODE",
    ("misc", "x7"): "US_SSN",
    ("misc", "notes"): "FREE_TEXT",
    ("misc", "val"): "FREE_TEXT",  # mixed: emails, phones, amounts
    ("misc", "payload"): None,  # JSON without PII
    # look-alikes
    ("orders", "id"): None,
    ("orders", "order_number"): None,
    ("orders", "order_ref"): None,
    ("orders", "amount"): None,
    ("orders", "amount_text"): None,
    ("orders", "tracking_id"): None,
    ("orders", "app_version"): None,
    ("orders", "status"): None,
    ("orders", "placed_on"): None,
    ("orders", "quantity"): None,
    ("orders", "sku"): None,
}

DDL = """
CREATE TABLE {s}.customers (
    id integer PRIMARY KEY, first_name text, "lastName" text, "emailAddress" text, e_mail_2 varchar(200),
    mobile_no text, msisdn bigint, birth_date date, social_security_number text, street_address text,
    postcode text, "IPAddr" text, last_login inet, cc_number text, iban text, email_verified boolean,
    email_template_id integer, external_id uuid, created_at timestamptz, lifetime_value numeric(12,2),
    order_count integer, c1 text);
COMMENT ON COLUMN {s}.customers.c1 IS 'Customer phone number (mobile)';
CREATE TABLE {s}.misc (
    id integer PRIMARY KEY, info jsonb, x2 text, x3 text, x4 text, x5 text, x6 text, x7 text, notes text,
    val text, payload jsonb);
CREATE TABLE {s}.orders (
    id integer PRIMARY KEY, order_number bigint, order_ref text, amount numeric(10,2), amount_text text,
    tracking_id text, app_version text, status text, placed_on date, quantity integer, sku text);
"""

_FIRST = ["Ada", "Grace", "Alan", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances", "Edsger"]
_LAST = ["Lovelace", "Hopper", "Turing", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson", "Allen"]
_STREETS = ["Main St", "Baker Street", "Rue de Rivoli", "Unter den Linden", "Via Roma"]


def _card(rng: random.Random) -> str:
    from evals.pii_text import luhn_check_digit

    body = "4" + "".join(rng.choice("0123456789") for _ in range(14))
    number = body + luhn_check_digit(body)
    return " ".join(number[i : i + 4] for i in range(0, 16, 4)) if rng.random() < 0.5 else number


def _dashed_ssn(rng: random.Random) -> str:
    digits = "".join(ch for ch in ssn(rng) if ch.isdigit())
    return f"{digits[:3]}-{digits[3:5]}-{digits[5:]}"


def _rows(rng: random.Random) -> dict[str, list[tuple[object, ...]]]:
    import datetime as dt
    import decimal
    import ipaddress
    import uuid

    customers, misc, orders = [], [], []
    plain = ["Asked for a callback about the delivery window.", "Happy with the product, no action needed."]
    for i in range(1, ROWS + 1):
        customers.append(
            (
                i,
                rng.choice(_FIRST),
                rng.choice(_LAST),
                email(rng),
                email(rng),
                phone(rng),
                int("49151" + "".join(rng.choice("0123456789") for _ in range(8))),
                dt.date(1950 + i % 50, 1 + i % 12, 1 + i % 28),
                ssn(rng),
                f"{rng.randint(1, 200)} {rng.choice(_STREETS)}",
                f"{rng.randint(10000, 99999)}",
                ip(rng),
                ipaddress.ip_address(f"10.0.{i % 250}.{1 + i % 250}"),
                _card(rng),
                iban(rng),
                i % 2 == 0,
                i % 7,
                uuid.UUID(int=rng.getrandbits(128)),
                dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                decimal.Decimal(f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d}"),
                rng.randint(0, 50),
                phone(rng),
            )
        )
        info = {
            "contact": {"email": email(rng), "phone": phone(rng)},
            "name": f"{rng.choice(_FIRST)} Doe",
            "tier": i % 3,
        }
        kind = i % 3
        val = (
            email(rng) if kind == 0 else phone(rng) if kind == 1 else f"{rng.randint(1, 999)}.{rng.randint(0, 99):02d}"
        )
        pii_note = positive(rng, rng.choice(["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"])).text
        note = pii_note if i % 4 == 0 else negative(rng).text + " " + rng.choice(plain)
        misc.append(
            (
                i,
                json.dumps(info),
                phone(rng),
                email(rng),
                _card(rng),
                ip(rng),
                iban(rng),
                _dashed_ssn(rng),
                note,
                val,
                json.dumps({"theme": rng.choice(["dark", "light"]), "page_size": rng.choice([10, 25, 50])}),
            )
        )
        orders.append(
            (
                i,
                1_000_000 + i * 37,
                f"ORD-2026-{i:06d}",
                decimal.Decimal(f"{rng.randint(1, 9999)}.{rng.randint(0, 99):02d}"),
                f"{rng.randint(1, 9999):,}.{rng.randint(0, 99):02d}",
                f"1Z{rng.randint(100, 999)}AA1{rng.randint(10**9, 10**10 - 1)}",
                f"{rng.randint(1, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 99)}",
                rng.choice(["open", "shipped", "returned"]),
                dt.date(2026, 1 + i % 12, 1 + i % 28),
                rng.randint(1, 9),
                f"SKU-{rng.randint(10000, 99999)}-{rng.choice('ABC')}",
            )
        )
    return {"customers": customers, "misc": misc, "orders": orders}


async def create_schema(dsn: str, *, copies: int = 1, schema: str = "public", seed: int = 11) -> list[str]:
    """Create the tables (in `schema`, or in s1..s<copies> when copies > 1) and fill them; returns the
    schemas used."""
    rng = random.Random(seed)
    schemas = [schema] if copies == 1 else [f"s{n}" for n in range(1, copies + 1)]
    conn = await asyncpg.connect(dsn)
    try:
        for name in schemas:
            if name != "public":
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{name}"')
            await conn.execute(DDL.format(s=f'"{name}"'))
            for table, rows in _rows(rng).items():
                await conn.copy_records_to_table(table, records=rows, schema_name=name)
    finally:
        await conn.close()
    return schemas
