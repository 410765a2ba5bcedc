"""Exports people and tools read: JSON Lines that verify away from the store, a table for a terminal."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from server.audit.chain import event_from_record, verify_chain
from server.audit.event import AuditEvent, StoredEvent
from server.audit.export import export_jsonl, format_tail, parse_time
from server.store import StateStore, open_state_store

T0 = datetime(2026, 7, 28, 9, 0, tzinfo=UTC)


def event(n: int, **changes: object) -> AuditEvent:
    values: dict[str, object] = {
        "id": f"evt-{n}-{uuid.uuid4().hex[:6]}",
        "time": T0 + timedelta(hours=n),
        "tool": "query",
        "decision": "allow",
        "agent_id": "analyst-bot",
        "arguments": {"sql": "SELECT name FROM customers WHERE city = 'Zürich'"},
        "statement_kind": "select",
        "tables": ("public.customers",),
        "row_count": n,
        "duration_ms": 2.5,
        **changes,
    }
    return AuditEvent(**values)  # type: ignore[arg-type]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[StateStore]:
    opened = await open_state_store("sqlite:///state.db", base_dir=str(tmp_path))
    try:
        yield opened
    finally:
        await opened.close()


async def export_lines(store: StateStore, **window: datetime) -> list[dict[str, object]]:
    out = io.StringIO()
    count = await export_jsonl(store, out, **window)
    lines = out.getvalue().splitlines()
    assert count == len(lines)
    return [json.loads(line) for line in lines]


# --- export_jsonl ---------------------------------------------------------------------------------


async def test_each_exported_line_is_one_event_with_its_place_in_the_chain(store: StateStore) -> None:
    stored = [await store.append_audit(event(n)) for n in range(1, 4)]

    lines = await export_lines(store)

    assert [line["sequence"] for line in lines] == [1, 2, 3]
    for line, original in zip(lines, stored, strict=True):
        assert line["prev_hash"] == original.prev_hash and line["hash"] == original.hash
        assert {f.name for f in fields(AuditEvent)} <= line.keys()
        assert line["id"] == original.event.id
        assert line["time"] == original.event.time.isoformat()
        assert line["tables"] == ["public.customers"]


async def test_export_keeps_only_events_from_since_until_before_until(store: StateStore) -> None:
    for n in range(1, 6):  # one event an hour from 10:00 to 14:00
        await store.append_audit(event(n))

    window = await export_lines(store, since=parse_time("2026-07-28T11:00"), until=parse_time("2026-07-28T13:00Z"))
    since_only = await export_lines(store, since=parse_time("2026-07-28T15:00:00+02:00"))
    everything = await export_lines(store, since=parse_time("2026-07-28"))

    assert [line["sequence"] for line in window] == [2, 3]
    assert [line["sequence"] for line in since_only] == [4, 5]
    assert len(everything) == 5


async def test_an_export_verifies_away_from_the_store(store: StateStore) -> None:
    for n in range(1, 8):
        await store.append_audit(event(n))
    lines = await export_lines(store)

    def restore(line: dict[str, object]) -> StoredEvent:
        record = {k: v for k, v in line.items() if k not in ("sequence", "prev_hash", "hash")}
        return StoredEvent(
            sequence=int(str(line["sequence"])),
            prev_hash=str(line["prev_hash"]),
            hash=str(line["hash"]),
            event=event_from_record(record),
        )

    copies = [restore(line) for line in lines]
    assert verify_chain(copies) is None
    lines[3]["row_count"] = 1000
    broken = verify_chain([restore(line) for line in lines])
    assert broken is not None and broken.sequence == 4


async def test_export_writes_text_readably_and_every_line_encodes(store: StateStore) -> None:
    await store.append_audit(event(1, purpose="Grüße \ud800 half a pair"))
    out = io.StringIO()
    await export_jsonl(store, out)

    text = out.getvalue()
    assert "Zürich" in text and "Grüße" in text
    text.encode("utf-8")  # a lone surrogate is written as its escape, not as a raw half pair
    assert json.loads(text)["purpose"] == "Grüße \ud800 half a pair"


async def test_an_empty_trail_exports_nothing(store: StateStore) -> None:
    out = io.StringIO()
    assert await export_jsonl(store, out) == 0
    assert out.getvalue() == ""


# --- format_tail ----------------------------------------------------------------------------------


def stored(n: int, **changes: object) -> StoredEvent:
    return StoredEvent(sequence=n, prev_hash="0" * 64, hash="f" * 64, event=event(n, **changes))


def test_the_tail_is_a_table_with_one_line_per_event() -> None:
    table = format_tail(
        [
            stored(1),
            stored(
                2,
                decision="deny",
                statement_kind="ddl",
                row_count=None,
                duration_ms=None,
                reasons=("writes are not permitted", "DROP TABLE is never allowed"),
            ),
            stored(
                3,
                decision="error",
                error="query_failed:\ncanceling statement due to timeout" * 5,
                truncated=True,
            ),
        ]
    )

    header, rule, *rows = table.splitlines()
    assert header.split() == [
        "#",
        "time",
        "(UTC)",
        "agent",
        "tool",
        "decision",
        "kind",
        "tables",
        "rows",
        "ms",
        "error",
        "/",
        "reason",
    ]
    assert set(rule) <= {"-", " "}
    assert len(rows) == 3
    assert "2026-07-28 10:00:00" in rows[0] and "analyst-bot" in rows[0] and "public.customers" in rows[0]
    assert "writes are not permitted; DROP TABLE is never allowed" in rows[1]
    assert " - " in rows[1]  # no row count, no duration
    assert rows[2].endswith("…") and "3+" in rows[2]
    # fixed width: every column starts where its header does
    assert rows[0].index("allow") == rows[1].index("deny") == header.index("decision")
    assert rows[0].index("2.5") + 3 == rows[2].index("2.5") + 3 == header.index("ms") + 2


def test_an_empty_tail_says_so() -> None:
    assert format_tail([]) == "no audit events"


# --- parse_time -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-07-28", datetime(2026, 7, 28, tzinfo=UTC)),
        ("2026-07-28T14:30", datetime(2026, 7, 28, 14, 30, tzinfo=UTC)),
        ("2026-07-28 14:30:05", datetime(2026, 7, 28, 14, 30, 5, tzinfo=UTC)),
        ("2026-07-28T14:30:05Z", datetime(2026, 7, 28, 14, 30, 5, tzinfo=UTC)),
        ("2026-07-28T14:30:05.250+02:00", datetime(2026, 7, 28, 12, 30, 5, 250000, tzinfo=UTC)),
        ("  2026-07-28T14:30:05-05:00 ", datetime(2026, 7, 28, 19, 30, 5, tzinfo=UTC)),
    ],
)
def test_times_on_the_command_line_are_iso_and_utc_unless_they_say_otherwise(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed.tzinfo is not None and parsed.utcoffset() == UTC.utcoffset(None)


@pytest.mark.parametrize("text", ["", "yesterday", "28/07/2026", "2026-13-01", "2026-07-28T25:00"])
def test_a_time_that_is_not_iso_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not an ISO date or date-time; use for example 2026-07-28"):
        parse_time(text)
