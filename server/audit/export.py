"""The audit trail in the forms people read it: JSON Lines for tools, CSV for spreadsheets, a table
for a terminal.

Exports carry each event's sequence and both hashes, so a copy of the trail can be verified away
from the store (JSON Lines exactly; CSV is for reading, not for re-verifying). Times on the command
line are ISO 8601; one without a zone is UTC, the zone the trail is kept in, so the same `--since`
means the same thing on every machine.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from server.audit.event import AuditEvent, StoredEvent
from server.store.base import StateStore, as_utc


def parse_time(text: str) -> datetime:
    """`2026-07-28`, `2026-07-28T14:30`, `2026-07-28 14:30:00Z`, `...+02:00` -> an aware UTC datetime
    (a date alone is its midnight, UTC). Raises ValueError with a message fit for the command line."""
    value = text.strip()
    try:
        if not value:
            raise ValueError
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an ISO date or date-time; use for example 2026-07-28, 2026-07-28T14:30 "
            "or 2026-07-28T14:30:00+02:00 (a time without a zone is UTC)"
        ) from None
    return as_utc(moment)


def export_record(stored: StoredEvent) -> dict[str, Any]:
    """The event's record with its place in the chain: what one line of an export holds."""
    return {
        "sequence": stored.sequence,
        **stored.event.to_record(),
        "prev_hash": stored.prev_hash,
        "hash": stored.hash,
    }


def jsonl_line(stored: StoredEvent) -> str:
    """One line of JSON, without its newline. Non-ASCII text stays readable; a lone surrogate (which
    UTF-8 cannot carry) is written as its JSON escape, so the line always encodes."""
    line = json.dumps(export_record(stored), ensure_ascii=False, separators=(",", ":"))
    return line.encode("utf-8", "backslashreplace").decode("utf-8")


async def export_jsonl(
    store: StateStore, out: TextIO, since: datetime | None = None, until: datetime | None = None
) -> int:
    """Write the events with `since <= time < until`, oldest first, one JSON object a line; returns how
    many. Reads the trail in batches, so a long trail is never held in memory at once."""
    count = 0
    async for stored in store.iter_audit_events(since, until):
        out.write(jsonl_line(stored) + "\n")
        count += 1
    out.flush()
    return count


#: CSV columns: the record's fields in the event's order, with the SQL pulled out of the arguments
CSV_COLUMNS: tuple[str, ...] = (
    "sequence",
    *(name for name in AuditEvent.__dataclass_fields__ if name != "arguments"),
    "sql",
    "arguments",
    "prev_hash",
    "hash",
)
#: a spreadsheet runs a cell that starts with one of these as a formula; agents write the SQL, the
#: purpose and the prompt context, so such cells are prefixed with ' (OWASP's CSV injection advice)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        text = "; ".join(str(item) for item in value)
    elif isinstance(value, dict):
        text = json.dumps(value, ensure_ascii=False, sort_keys=True) if value else ""
    else:
        text = str(value)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_row(stored: StoredEvent) -> list[str]:
    """One event as CSV cells: lists joined with "; ", maps as JSON, nulls empty."""
    record = export_record(stored)
    arguments = record.get("arguments") or {}
    record["sql"] = arguments.get("sql") if isinstance(arguments, dict) else None
    return [_csv_cell(record.get(column)) for column in CSV_COLUMNS]


async def export_csv(
    store: StateStore, out: TextIO, since: datetime | None = None, until: datetime | None = None
) -> int:
    """Like `export_jsonl`, as CSV with a header row (RFC 4180 quoting, CRLF line ends)."""
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    count = 0
    async for stored in store.iter_audit_events(since, until):
        writer.writerow(csv_row(stored))
        count += 1
    out.flush()
    return count


_SPACE = re.compile(r"\s+")


def _clean(text: str) -> str:
    """One line: newlines and tabs in an error or a reason would break the table's rows."""
    return _SPACE.sub(" ", text).strip()


def _time(stored: StoredEvent) -> str:
    return stored.event.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _outcome(stored: StoredEvent) -> str:
    event = stored.event
    if event.error:
        return event.error
    return "; ".join(event.reasons)


def _number(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


# (header, cell, widest width, right-aligned)
_COLUMNS: tuple[tuple[str, Callable[[StoredEvent], str], int, bool], ...] = (
    ("#", lambda s: str(s.sequence), 10, True),
    ("time (UTC)", _time, 19, False),
    ("agent", lambda s: s.event.agent_id or "-", 20, False),
    ("tool", lambda s: s.event.tool, 16, False),
    ("decision", lambda s: s.event.decision, 17, False),
    ("kind", lambda s: s.event.statement_kind or "-", 11, False),
    ("tables", lambda s: ", ".join(s.event.tables) or "-", 32, False),
    ("rows", lambda s: _number(s.event.row_count, "d") + ("+" if s.event.truncated else ""), 8, True),
    ("ms", lambda s: _number(s.event.duration_ms, ".1f"), 9, True),
    ("error / reason", _outcome, 72, False),
)


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def format_tail(events: Sequence[StoredEvent]) -> str:
    """A fixed-width table of the events, one line each, for `bastion audit tail`. Long cells are cut
    with an ellipsis; the full text is in `bastion audit export`."""
    if not events:
        return "no audit events"
    rows = [[_fit(_clean(cell(stored)), width) for _, cell, width, _ in _COLUMNS] for stored in events]
    headers = [header for header, *_ in _COLUMNS]
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) for i in range(len(_COLUMNS))]

    def line(cells: Sequence[str]) -> str:
        padded = [cell.rjust(widths[i]) if _COLUMNS[i][3] else cell.ljust(widths[i]) for i, cell in enumerate(cells)]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])
