"""The auditor's report: the trail of a period, summarized to answer access-review questions.

`build_report(store, since, until, key)` reads the period's events once (in batches) and verifies the
whole trail, and returns a `Report`: plain data that server/audit/report_html.py renders. The
questions it is built to answer are the ones a SOC 2 access review asks: who called, what was refused
and why, who saw which PII column in the clear and who only saw it masked, which writes ran and who
approved them, and whether the record itself can be trusted (the chain verification).

Only calls count as calls: checkpoints and other bookkeeping events (tools named in parentheses, such
as `(policy reload)`) are reported apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from server.audit.checkpoint import AuditKey
from server.audit.event import StoredEvent
from server.audit.verify import Verification, verify_trail
from server.store.base import StateStore, UnreadableEvent

DECISIONS = ("allow", "deny", "approval_required", "error")
APPROVER_TOOLS = frozenset({"(approve)", "(deny)"})
WRITE_KINDS = frozenset({"insert", "update", "delete", "merge", "ddl", "admin"})
#: the most rows a detail table lists; the rest is counted and left to `bastion audit export`
MAX_LISTED = 2_000
READ_BATCH = 1_000


@dataclass
class AgentAccess:
    agent: str
    decisions: Counter[str] = field(default_factory=Counter)
    rows: int = 0
    tables: set[str] = field(default_factory=set)
    unmasked: set[str] = field(default_factory=set)
    masked: set[str] = field(default_factory=set)
    last_seen: datetime | None = None

    @property
    def calls(self) -> int:
        return sum(self.decisions.values())


@dataclass
class TableAccess:
    table: str
    reads: int = 0
    writes: int = 0
    refused: int = 0
    rows: int = 0
    agents: set[str] = field(default_factory=set)


@dataclass
class PiiAccess:
    """One PII column as one agent saw it in the period."""

    column: str
    agent: str
    unmasked_calls: int = 0
    masked_calls: int = 0
    rows_unmasked: int = 0
    rows_masked: int = 0
    purposes: set[str] = field(default_factory=set)
    last_seen: datetime | None = None


@dataclass
class Report:
    since: datetime | None
    until: datetime | None
    generated_at: datetime
    store: str
    verification: Verification
    calls: int = 0
    first: datetime | None = None
    last: datetime | None = None
    decisions: Counter[str] = field(default_factory=Counter)
    #: bucket start -> decision -> calls
    timeline: dict[datetime, Counter[str]] = field(default_factory=dict)
    bucket: str = "day"
    agents: dict[str, AgentAccess] = field(default_factory=dict)
    tables: dict[str, TableAccess] = field(default_factory=dict)
    pii: dict[tuple[str, str], PiiAccess] = field(default_factory=dict)
    denials: list[StoredEvent] = field(default_factory=list)
    approvals: list[StoredEvent] = field(default_factory=list)
    #: approvers' decisions on approval requests, as the approvals service records them
    approver_decisions: list[StoredEvent] = field(default_factory=list)
    writes: list[StoredEvent] = field(default_factory=list)
    errors: int = 0
    #: checkpoints, policy reloads and other events that are not tool calls
    bookkeeping: Counter[str] = field(default_factory=Counter)
    #: how many entries each detail list could not hold (see MAX_LISTED)
    overflow: Counter[str] = field(default_factory=Counter)
    #: sequences of records in the period that could not be read (altered by hand)
    unreadable: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.calls == 0 and not self.approver_decisions

    @property
    def period_start(self) -> datetime | None:
        return self.since or self.first

    @property
    def period_end(self) -> datetime | None:
        return self.until or self.last


def _bucket_size(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "day"
    span = end - start
    if span <= timedelta(days=2):
        return "hour"
    if span <= timedelta(days=120):
        return "day"
    return "week"


def bucket_start(moment: datetime, size: str) -> datetime:
    moment = moment.astimezone(UTC)
    if size == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday()) if size == "week" else day


def qualified(database: str | None, name: str) -> str:
    return f"{database}: {name}" if database else name


def _keep(report: Report, items: list[StoredEvent], kind: str, stored: StoredEvent) -> None:
    if len(items) < MAX_LISTED:
        items.append(stored)
    else:
        report.overflow[kind] += 1


def _add(report: Report, stored: StoredEvent) -> None:
    event = stored.event
    if event.tool in APPROVER_TOOLS:  # a human approving or denying a request (issue 6)
        _keep(report, report.approver_decisions, "approver_decisions", stored)
        return
    if event.tool.startswith("("):
        report.bookkeeping[event.tool] += 1
        return
    report.calls += 1
    report.first = min(report.first or event.time, event.time)
    report.last = max(report.last or event.time, event.time)
    decision = event.decision if event.decision in DECISIONS else "error"
    report.decisions[decision] += 1
    report.timeline.setdefault(bucket_start(event.time, report.bucket), Counter())[decision] += 1
    agent_id = event.agent_id or "(unidentified)"
    agent = report.agents.setdefault(agent_id, AgentAccess(agent_id))
    agent.decisions[decision] += 1
    agent.last_seen = max(agent.last_seen or event.time, event.time)
    allowed = decision == "allow"
    rows = event.row_count or 0
    if allowed:
        agent.rows += rows
    is_write = (event.statement_kind or "") in WRITE_KINDS
    for table in event.tables:
        name = qualified(event.database, table)
        agent.tables.add(name)
        access = report.tables.setdefault(name, TableAccess(name))
        access.agents.add(agent_id)
        if not allowed:
            access.refused += 1
        elif is_write:
            access.writes += 1
            access.rows += rows
        else:
            access.reads += 1
            access.rows += rows
    if allowed:
        masked = set(event.masked_columns)
        for column in set(event.pii_columns) | masked:
            name = qualified(event.database, column)
            seen = report.pii.setdefault((name, agent_id), PiiAccess(name, agent_id))
            if column in masked:
                seen.masked_calls += 1
                seen.rows_masked += rows
                agent.masked.add(name)
            else:
                seen.unmasked_calls += 1
                seen.rows_unmasked += rows
                agent.unmasked.add(name)
            if event.purpose:
                seen.purposes.add(event.purpose[:200])
            seen.last_seen = max(seen.last_seen or event.time, event.time)
    if decision in ("deny", "approval_required"):
        _keep(report, report.denials, "denials", stored)
    if decision == "error":
        report.errors += 1
    if event.approval_id or event.approver:
        _keep(report, report.approvals, "approvals", stored)
    if is_write and allowed:
        _keep(report, report.writes, "writes", stored)


async def build_report(
    store: StateStore,
    since: datetime | None = None,
    until: datetime | None = None,
    key: AuditKey | None = None,
    *,
    store_label: str = "",
) -> Report:
    """Verify the whole trail (the period's events are only as good as the chain they are in), then
    summarize the period `since <= time < until`."""
    verification = await verify_trail(store, key)
    report = Report(since, until, datetime.now(UTC), store_label, verification)
    if since is None or until is None:
        first = await store.audit_events(since=since, until=until, limit=1)
        last = await store.audit_events(since=since, until=until, limit=1, newest_first=True)
        start = since or (first[0].event.time if first else None)
        end = until or (last[0].event.time if last else None)
    else:
        start, end = since, until
    report.bucket = _bucket_size(start, end)
    async for stored in _readable_events(store, since, until, report.unreadable):
        _add(report, stored)
    return report


async def _readable_events(
    store: StateStore, since: datetime | None, until: datetime | None, unreadable: list[int]
) -> AsyncIterator[StoredEvent]:
    """The period's events in batches; a record that no longer parses (edited by hand) is noted in
    `unreadable` and stepped over one event at a time, so a damaged trail still gets its report (whose
    verification section says what is wrong)."""

    async def select(after: int | None, limit: int) -> list[StoredEvent]:
        return await store._select_audit(
            since=since, until=until, after_sequence=after, limit=limit, newest_first=False
        )

    after: int | None = None
    while True:
        try:
            batch = await select(after, READ_BATCH)
        except UnreadableEvent:
            for _ in range(READ_BATCH):  # this batch's range, one event at a time
                try:
                    one = await select(after, 1)
                except UnreadableEvent as error:
                    unreadable.append(error.sequence)
                    after = error.sequence
                    continue
                if not one:
                    return
                yield one[0]
                after = one[0].sequence
            continue
        for stored in batch:
            yield stored
        if len(batch) < READ_BATCH:
            return
        after = batch[-1].sequence


def pii_rows(report: Report) -> list[PiiAccess]:
    """PII access, by column then by who saw it in the clear most."""
    return sorted(report.pii.values(), key=lambda p: (p.column, -p.unmasked_calls, -p.masked_calls, p.agent))


def timeline_series(report: Report) -> list[tuple[datetime, Counter[str]]]:
    """Every bucket of the period, empty ones included, so the time axis is even."""
    if not report.timeline:
        return []
    step = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(weeks=1)}[report.bucket]
    start = bucket_start(report.period_start or min(report.timeline), report.bucket)
    end_moment = report.period_end or max(report.timeline)
    if report.until is not None:
        end_moment -= timedelta(microseconds=1)  # until is exclusive
    end = max(bucket_start(end_moment, report.bucket), max(report.timeline))
    start = min(start, min(report.timeline))
    series, moment = [], start
    while moment <= end and len(series) < 400:
        series.append((moment, report.timeline.get(moment, Counter())))
        moment += step
    return series
