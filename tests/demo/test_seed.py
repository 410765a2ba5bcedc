"""The demo shop database: complete, documented, deterministic, full of detectable fake PII, and
replaced atomically when rebuilt."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from server.demo import seed
from server.demo.seed import DEMO_DIR, PRODUCTS, build_demo_database, demo_database_path

CARD = re.compile(r"\b\d{4}([ -])\d{4}\1\d{4}\1\d{4}\b")
EMAIL = re.compile(r"^[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$")
SSN = re.compile(r"^(?!000|666|9)\d{3}-(?!00)\d{2}-(?!0000)\d{4}$")
EU_COUNTRIES = {"Germany", "France", "Spain", "Italy", "Netherlands", "Ireland", "Poland", "Sweden",
                "Portugal", "Austria"}  # fmt: skip


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    compact = iban.replace(" ", "")
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def rows(path: Path) -> dict[str, list[tuple[object, ...]]]:
    with closing(sqlite3.connect(path)) as conn:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall() for table in seed.TABLES}


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_demo_database(demo_database_path(tmp_path_factory.mktemp("demo")))


@pytest.fixture
def conn(demo_db: Path) -> Iterator[sqlite3.Connection]:
    with closing(sqlite3.connect(f"file:{demo_db}?mode=ro", uri=True)) as connection:
        yield connection


def test_the_demo_lives_in_dot_bastion_by_default() -> None:
    assert DEMO_DIR.as_posix() == ".bastion"
    assert demo_database_path(Path("somewhere")) == Path("somewhere/demo.db")
    assert demo_database_path() == Path(".bastion/demo.db")


def test_the_file_has_every_table_and_the_view(demo_db: Path, conn: sqlite3.Connection) -> None:
    assert demo_db.is_file()
    objects = dict(conn.execute("SELECT name, type FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))
    assert {name for name, kind in objects.items() if kind == "table"} == set(seed.TABLES)
    assert {name for name, kind in objects.items() if kind == "view"} == set(seed.VIEWS)
    columns = [row[1] for row in conn.execute("PRAGMA table_info(customers)")]
    assert columns == ["id", "full_name", "email", "phone", "street_address", "city", "country",
                       "date_of_birth", "created_at", "region"]  # fmt: skip
    assert [row[1] for row in conn.execute("PRAGMA table_info(order_totals)")] == [
        "customer_id",
        "order_count",
        "revenue_cents",
    ]
    assert conn.execute("PRAGMA user_version").fetchone() == (seed.SCHEMA_VERSION,)


def test_row_counts_follow_the_number_of_customers(conn: sqlite3.Connection) -> None:
    def count(table: str) -> int:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

    assert count("customers") == 200
    assert count("products") == len(PRODUCTS)
    assert count("orders") == 200 * seed.ORDERS_PER_CUSTOMER
    assert count("support_tickets") == 100
    assert count("employees") == 20
    # uneven like a real shop: some customers never ordered, some order a lot
    per_customer = dict(conn.execute("SELECT customer_id, order_count FROM order_totals"))
    assert 0 < 200 - len(per_customer) < 100
    assert max(per_customer.values()) >= 3 * seed.ORDERS_PER_CUSTOMER


def test_a_small_shop_is_still_complete(tmp_path: Path) -> None:
    path = build_demo_database(tmp_path / "tiny.db", customers=1, seed=3)
    with closing(sqlite3.connect(path)) as conn:
        counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in seed.TABLES]
    assert counts == [1, len(PRODUCTS), seed.ORDERS_PER_CUSTOMER, 1, 5]
    with pytest.raises(ValueError, match="at least one customer"):
        build_demo_database(tmp_path / "none.db", customers=0)


def test_the_view_sums_the_orders(conn: sqlite3.Connection) -> None:
    view = conn.execute("SELECT sum(order_count), sum(revenue_cents) FROM order_totals").fetchone()
    direct = conn.execute(
        "SELECT count(*), sum(total_cents) FILTER (WHERE status NOT IN ('cancelled', 'refunded')) FROM orders"
    ).fetchone()
    assert view == direct


def test_foreign_keys_are_declared_and_hold(conn: sqlite3.Connection) -> None:
    def references(table: str) -> set[tuple[str, str]]:
        return {(row[3], row[2]) for row in conn.execute(f"PRAGMA foreign_key_list({table})")}

    assert references("orders") == {("customer_id", "customers"), ("product_id", "products")}
    assert references("support_tickets") == {("customer_id", "customers")}
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
    # orders and tickets come after the customer signed up
    assert conn.execute(
        "SELECT count(*) FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.ordered_at < c.created_at"
    ).fetchone() == (0,)
    assert conn.execute(
        "SELECT count(*) FROM support_tickets t JOIN customers c ON c.id = t.customer_id"
        " WHERE t.opened_at < c.created_at"
    ).fetchone() == (0,)


def test_every_column_is_documented_on_its_line(conn: sqlite3.Connection) -> None:
    for table in seed.TABLES:
        sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        lines = [line.strip() for line in sql.splitlines()[1:]]
        assert lines[0].startswith("--"), f"{table} has no table comment"
        commented = {line.split()[0]: line.split("--", 1)[1].strip() for line in lines if " -- " in line}
        for column in (row[1] for row in conn.execute(f"PRAGMA table_info({table})")):
            assert commented.get(column), f"{table}.{column} has no comment"


def test_the_same_seed_gives_the_same_rows(demo_db: Path, tmp_path: Path) -> None:
    again = build_demo_database(tmp_path / "again.db")
    assert rows(again) == rows(demo_db)
    other = build_demo_database(tmp_path / "other.db", seed=8)
    assert rows(other)["customers"] != rows(demo_db)["customers"]
    assert rows(other)["products"] == rows(demo_db)["products"]


def test_customers_look_like_real_people(conn: sqlite3.Connection) -> None:
    customers = conn.execute("SELECT email, phone, country, region, date_of_birth FROM customers").fetchall()
    emails = [row[0] for row in customers]
    assert all(EMAIL.match(email) for email in emails), [e for e in emails if not EMAIL.match(e)]
    assert len(set(emails)) == len(emails)
    phones = [row[1] for row in customers if row[1] is not None]
    assert 0.8 * len(customers) < len(phones) < len(customers)  # some customers gave no phone
    assert any(phone.startswith("+") for phone in phones)
    assert any(phone.startswith("(") for phone in phones)
    assert any(phone[0].isdigit() for phone in phones)
    assert len({phone[:3] for phone in phones if phone.startswith("+")}) >= 5  # several countries
    for _, _, country, region, _ in customers:
        assert region == "EU" if country in EU_COUNTRIES else region in {"US", "APAC"}
    assert {row[3] for row in customers} == {"EU", "US", "APAC"}
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", row[4]) for row in customers)


def test_phones_are_valid_numbers_of_their_country(conn: sqlite3.Connection) -> None:
    """Valid by libphonenumber (which Presidio's phone recognizer uses), so detection can work."""
    phonenumbers = pytest.importorskip("phonenumbers")
    regions = {"United States": "US", "Canada": "CA", "Germany": "DE", "France": "FR", "Spain": "ES",
               "Italy": "IT", "Netherlands": "NL", "Ireland": "IE", "Poland": "PL", "Sweden": "SE",
               "Portugal": "PT", "Austria": "AT", "Japan": "JP", "Australia": "AU", "India": "IN",
               "Singapore": "SG"}  # fmt: skip
    for phone, country in conn.execute("SELECT phone, country FROM customers WHERE phone IS NOT NULL"):
        assert phonenumbers.is_valid_number(phonenumbers.parse(phone, regions[country])), (phone, country)


def test_at_least_a_third_of_tickets_carry_a_luhn_valid_card(conn: sqlite3.Connection) -> None:
    bodies = [row[0] for row in conn.execute("SELECT body FROM support_tickets")]
    with_card = [body for body in bodies if any(luhn_valid(re.sub(r"\D", "", m.group())) for m in CARD.finditer(body))]
    assert len(with_card) >= len(bodies) / 3
    # the rest carry no personal data at all: true negatives for the free-text scanner
    for body in bodies:
        if body not in with_card:
            assert "@" not in body and not CARD.search(body), body
    everything = " ".join(bodies)
    assert "@" in everything and "+" in everything and re.search(r"\b[A-Z]{2}\d{2}(?: \w{4}){3}", everything)


def test_employees_carry_ssns_in_the_us_and_ibans_in_the_eu(conn: sqlite3.Connection) -> None:
    employees = conn.execute("SELECT email, country, salary_cents, ssn, iban FROM employees").fetchall()
    for email, country, salary_cents, ssn, iban in employees:
        assert EMAIL.match(email)
        assert salary_cents > 0
        assert (ssn is not None) == (country == "United States")
        assert ssn is None or SSN.match(ssn), ssn
        assert (iban is not None) == (country in EU_COUNTRIES)
        assert iban is None or (iban_valid(iban) and " " not in iban), iban
    assert any(row[3] for row in employees) and any(row[4] for row in employees)


def test_a_rebuild_replaces_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "demo.db"
    build_demo_database(path, customers=10)
    before = path.stat().st_ino
    (tmp_path / "demo.db-journal").write_bytes(b"stale journal of the old file")
    build_demo_database(path, customers=20)
    assert path.stat().st_ino != before
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (20,)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.db"]


def test_a_failed_build_leaves_the_previous_file_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = build_demo_database(tmp_path / "demo.db", customers=10)
    original = path.read_bytes()

    def broken(*args: object) -> list[tuple[object, ...]]:
        return [("not", "an", "employee")]

    monkeypatch.setattr(seed, "_employees", broken)
    with pytest.raises(sqlite3.Error):
        build_demo_database(path, customers=30)
    assert path.read_bytes() == original
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.db"]
