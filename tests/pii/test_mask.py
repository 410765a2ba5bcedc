"""Masking a result: every planned column masked whatever its values' types, spans replaced in free
text, other columns untouched, and any failure withholds the whole result."""

from __future__ import annotations

import datetime as dt
import decimal
import gc
import ipaddress
import os
import re
import uuid
from typing import Any

import pytest

from server.config import PiiConfig
from server.db.base import ResultColumn
from server.pii.keys import MaskKey
from server.pii.mask import ColumnPlan, Masker
from server.pii.model import MaskingFailed
from server.pii.operators import Operator, register_operator
from server.pii.scan import Scanner

HASHED = re.compile(r"^(email|pii|phone|text):[0-9a-f]{10}$")
KEY = MaskKey(os.urandom(32), "test")


@pytest.fixture
def masker(scanner: Scanner) -> Masker:
    built = Masker.from_config(PiiConfig(), key=KEY)
    built._scanner = scanner  # the session's scanner: building another costs a second
    return built


def columns(*names: str) -> tuple[ResultColumn, ...]:
    return tuple(ResultColumn(name, "text") for name in names)


ODD_VALUES: list[Any] = [
    "ada@example.com",
    b"ada@example.com",
    b"\xff\xfe\xfd not utf-8",
    ["ada@example.com", "bob@example.com"],
    {"email": "ada@example.com", "nested": {"phone": "+44 20 7946 0958"}},
    4155550123,
    decimal.Decimal("12.50"),
    3.5,
    True,
    dt.date(1990, 5, 17),
    dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    uuid.UUID(int=7),
    ipaddress.ip_address("10.0.0.1"),
    "emoji 😀 ada@example.com 🎉",
    "x" * 200_000 + " ada@example.com",
    "",
]


def test_a_masked_column_holds_only_masked_strings_and_nulls(masker: Masker) -> None:
    rows = [(value,) for value in ODD_VALUES] + [(None,)]
    result = masker.mask(columns("v"), rows, [ColumnPlan(operator="hash", entity="EMAIL_ADDRESS")])
    masked = [row[0] for row in result.rows]
    assert masked[-1] is None
    assert all(isinstance(value, str) and value.startswith("email:") for value in masked[:-1])
    assert result.masked_cells == (len(ODD_VALUES),)


def test_the_null_operator_masks_every_value_to_null(masker: Masker) -> None:
    rows = [(value,) for value in ODD_VALUES]
    result = masker.mask(columns("v"), rows, [ColumnPlan(operator="null", entity="PHONE_NUMBER")])
    assert all(row[0] is None for row in result.rows)
    assert result.masked_cells == (len(ODD_VALUES),)


def test_the_same_value_hashes_alike_in_every_row_and_column(masker: Masker) -> None:
    rows = [("ada@example.com", "ada@example.com"), ("bob@example.com", "ada@example.com")] * 50
    plan = [ColumnPlan(operator="hash", entity="EMAIL_ADDRESS")] * 2
    result = masker.mask(columns("a", "b"), rows, plan)
    assert result.rows[0][0] == result.rows[0][1] == result.rows[1][1]
    assert result.rows[1][0] != result.rows[0][0]
    assert all(HASHED.match(v) for row in result.rows for v in row)


def test_scanning_replaces_spans_in_strings_lists_json_and_bytes(masker: Masker) -> None:
    rows = [(value,) for value in ODD_VALUES]
    result = masker.mask(columns("notes"), rows, [ColumnPlan(scan=True)])
    out = [row[0] for row in result.rows]
    assert out[0].startswith("email:")
    assert out[1].startswith("email:")  # bytes with PII come back as masked text
    assert out[2] == b"\xff\xfe\xfd not utf-8"  # nothing found: the very same value
    assert all(v.startswith("email:") for v in out[3])
    assert out[4]["email"].startswith("email:") and out[4]["nested"]["phone"].startswith("phone:")
    assert out[5] == 4155550123  # bare digits with no phone word: not a phone (see phones.py)
    assert out[6:12] == ODD_VALUES[6:12]  # numbers, dates, uuids: nothing to scan
    assert out[12].startswith("ip:")  # an address object is scanned through its text
    assert out[13].startswith("emoji 😀 email:") and out[13].endswith(" 🎉")
    assert out[14].startswith("x" * 1000) and "ada@example.com" not in out[14]
    assert out[15] == ""
    assert "ada@example.com" not in repr(out)


def test_scanning_finds_a_card_number_stored_as_an_integer(masker: Masker) -> None:
    result = masker.mask(columns("n"), [(4111111111111111,), (42,)], [ColumnPlan(scan=True)])
    assert result.rows[0][0].startswith("card:") and result.rows[1][0] == 42


def test_scanning_counts_changed_cells_and_reports_entities(masker: Masker) -> None:
    rows = [("call +44 20 7946 0958",), ("no pii here",), (None,), ("ada@example.com",), ("ada@example.com",)]
    result = masker.mask(columns("notes"), rows, [ColumnPlan(scan=True)])
    assert result.masked_cells == (3,)
    assert result.found_entities == (frozenset({"PHONE_NUMBER", "EMAIL_ADDRESS"}),)
    assert result.rows[1] == ("no pii here",) and result.rows[2] == (None,)


def test_a_scan_plan_with_an_operator_masks_spans_with_it(masker: Masker) -> None:
    result = masker.mask(columns("notes"), [("mail ada@example.com now",)], [ColumnPlan(operator="redact", scan=True)])
    assert result.rows == [("mail [EMAIL_ADDRESS] now",)]


def test_columns_without_a_plan_come_back_byte_for_byte(masker: Masker) -> None:
    odd = b"\xff raw"
    rows = [(1, odd, "ada@example.com"), (2, None, "bob@example.com")]
    result = masker.mask(
        columns("id", "blob", "email"), rows, [None, ColumnPlan(), ColumnPlan("hash", "EMAIL_ADDRESS")]
    )
    assert [row[:2] for row in result.rows] == [(1, odd), (2, None)]
    assert result.rows[0][1] is odd
    assert result.masked_cells == (0, 0, 2)


def test_an_empty_result_is_fine(masker: Masker) -> None:
    result = masker.mask(columns("a"), [], [ColumnPlan(scan=True)])
    assert result.rows == [] and result.masked_cells == (0,)


class Exploding(Operator):
    name = "exploding_for_test"

    def mask(self, value: object, entity: str | None) -> str:
        raise RuntimeError(f"cannot mask {value}")


def test_an_operator_that_fails_withholds_the_result_without_echoing_values(masker: Masker) -> None:
    register_operator("exploding_for_test", lambda key: Exploding(), replace=True)
    rows = [("ada@example.com", "fine")]
    with pytest.raises(MaskingFailed) as raised:
        masker.mask(columns("email", "other"), rows, [ColumnPlan("exploding_for_test", "EMAIL_ADDRESS"), None])
    assert "'email'" in raised.value.message and "RuntimeError" in raised.value.message
    assert "ada@example.com" not in str(raised.value)
    assert gc.isenabled()


class Leaky(Operator):
    name = "leaky_for_test"

    def mask(self, value: object, entity: str | None) -> Any:
        return value  # a buggy operator handing the raw value back


def test_an_operator_returning_anything_but_text_fails_closed(masker: Masker) -> None:
    register_operator("leaky_for_test", lambda key: Leaky(), replace=True)
    with pytest.raises(MaskingFailed, match="leaky_for_test"):
        masker.mask(columns("n"), [(4111111111111111,)], [ColumnPlan("leaky_for_test", "CREDIT_CARD")])
    with pytest.raises(MaskingFailed, match="unmasked"):
        masker.mask(columns("s"), [("ada@example.com",)], [ColumnPlan("leaky_for_test", "EMAIL_ADDRESS")])


def test_an_unknown_operator_in_a_plan_fails_closed(masker: Masker) -> None:
    with pytest.raises(MaskingFailed, match="unknown masking operator 'scramble'"):
        masker.mask(columns("email"), [("ada@example.com",)], [ColumnPlan("scramble", "EMAIL_ADDRESS")])


def test_a_scanner_that_fails_withholds_the_result(masker: Masker, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise ValueError("boom")

    monkeypatch.setattr(masker.scanner, "replace_many", broken)
    with pytest.raises(MaskingFailed, match="'notes'"):
        masker.mask(columns("notes"), [("ada@example.com",)], [ColumnPlan(scan=True)])
    assert gc.isenabled()


@pytest.mark.parametrize(
    ("rows", "plans"),
    [
        ([("a", "b")], [ColumnPlan(scan=True)]),  # plan for one column, result of two
        ([("a",), ("b", "c")], [ColumnPlan(scan=True), None]),  # a row of the wrong width
    ],
)
def test_a_result_that_does_not_fit_its_plan_is_refused(
    masker: Masker, rows: list[tuple[str, ...]], plans: list[ColumnPlan | None]
) -> None:
    with pytest.raises(MaskingFailed):
        masker.mask(columns("a", "b"), rows, plans)


def test_a_circular_value_in_a_masked_column_fails_closed(masker: Masker) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(MaskingFailed):
        masker.mask(columns("v"), [(loop,)], [ColumnPlan("hash", None)])
