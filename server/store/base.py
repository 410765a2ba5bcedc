"""The state store's contract, shared by the SQLite and PostgreSQL backends.

The store keeps what must outlive a call: the audit trail now, approvals and the catalog's PII
classifications later. It knows nothing of MCP or the request path; it takes and returns the audit
contract's values (`AuditEvent`, `StoredEvent`) and raises `StoreError`, whose message is safe to show
(no DSN password, no driver text; the driver's exception is chained for the log).

The backends share one storage shape: each event is a row keyed by its gap-free `sequence`, with the
columns reports filter on copied out of the record, and the record itself as canonical JSON text. The
record is the truth; the columns are an index into it.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from server.approvals.model import Approval, ApprovalMode, ApprovalStatus
from server.audit.chain import ChainHead, canonical_json, event_from_record, hashed_form, record_of
from server.audit.event import AuditEvent, StoredEvent
from server.errors import BastionError
from server.pii.model import ColumnClassification

DEFAULT_BATCH_SIZE = 1000
#: the most events one group commit writes; a larger backlog is written in several transactions
MAX_GROUP_COMMIT = 256


class StoreError(BastionError):
    """The state store could not be opened, read or written."""

    code = "store"


class UnreadableEvent(StoreError):
    """A stored record that does not parse as an event: verify reports it at its sequence."""

    def __init__(self, sequence: int, reason: str) -> None:
        super().__init__(f"audit event {sequence} cannot be read: {reason}")
        self.sequence = sequence


def as_utc(moment: datetime) -> datetime:
    """Aware datetimes are converted to UTC; naive ones are taken to be UTC already, which is what
    every caller in Bastion means by them."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class PreparedEvent:
    """An event made ready to append, with all the encoding done before the chain head is locked."""

    #: the event exactly as reads will return it: time in UTC, nested values as JSON gives them back
    event: AuditEvent
    #: the record's canonical JSON, stored as the event's truth: its hashed form, i.e. without the
    #: fields at their empty default, which reading fills back in (older rows hold every field; both
    #: read and hash the same)
    record_json: str

    @property
    def hashed_json(self) -> str:
        """What the chain hashes (server/audit/chain.py): the stored text itself."""
        return self.record_json


def prepare_event(event: AuditEvent) -> PreparedEvent:
    """Raises StoreError when the event cannot be encoded (NaN, a value JSON cannot hold), before
    anything is written. Runs on every call's path, so it encodes once and parses once."""
    if not isinstance(event.time, datetime):
        raise StoreError("the audit event has no valid time")
    try:
        record = record_of(event)
        record["time"] = as_utc(event.time).isoformat()
        text = canonical_json(hashed_form(record))
        return PreparedEvent(event_from_record(json.loads(text)), text)
    except (TypeError, ValueError) as error:
        raise StoreError("the audit event cannot be encoded as JSON") from error


def column_text(value: str | None) -> str | None:
    """A copy of a record field for an indexed column. PostgreSQL text cannot hold NUL; the record
    keeps the exact value, the column only has to be good enough to filter on."""
    return None if value is None else value.replace("\x00", "\ufffd")


def decode_event(sequence: int, prev_hash: str, hash_: str, record_text: str) -> StoredEvent:
    """Rebuild a stored event, naming the sequence when a record cannot be read (altered by hand, or
    written by a newer Bastion)."""
    try:
        record: Any = json.loads(record_text)
        if not isinstance(record, dict):
            raise ValueError("the record is not a JSON object")
        event = event_from_record(record)
    except ValueError as error:  # json.JSONDecodeError is a ValueError
        raise UnreadableEvent(sequence, str(error)) from None
    return StoredEvent(sequence=sequence, prev_hash=prev_hash, hash=hash_, event=event)


class GroupCommit:
    """Appends from concurrent calls gathered into one transaction, so 50 agents share one fsync.

    Each `append` queues its event and waits. One flusher task per store drains the queue: it takes
    everything waiting (up to MAX_GROUP_COMMIT), hands it to the backend's `write` (which links the
    events in order after the chain head and commits them together), then takes what arrived while that
    transaction was flushing, and so on. Nothing is delayed on purpose: a lone call is written at
    once, and batches form only while a commit is already in flight, which is when callers would
    otherwise queue behind one fsync each. Every caller still returns only after its own event is
    committed.

    A batch that fails because of one event (a duplicate id: `per_event(error)` says so) is written
    again one event at a time, so only the bad event's caller fails. Any other failure (the store is
    down or locked) fails the whole batch at once, without retrying each event against it.
    """

    def __init__(
        self,
        write: Callable[[list[PreparedEvent]], Awaitable[list[StoredEvent]]],
        *,
        per_event: Callable[[BaseException], bool] = lambda error: False,
        max_batch: int = MAX_GROUP_COMMIT,
    ) -> None:
        self._write = write
        self._per_event = per_event
        self._max_batch = max_batch
        self._pending: list[tuple[PreparedEvent, asyncio.Future[StoredEvent]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: transactions written and events in them (the group-commit tests and the benchmark read them)
        self.transactions = 0
        self.events = 0

    async def append(self, prepared: PreparedEvent) -> StoredEvent:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[StoredEvent] = loop.create_future()
        self._pending.append((prepared, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush(), name="bastion-audit-group-commit")
        return await future

    async def drain(self) -> None:
        """Wait until everything queued so far is written (or failed): what `close` does first."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    async def _flush(self) -> None:
        batch: list[tuple[PreparedEvent, asyncio.Future[StoredEvent]]] = []
        try:
            while self._pending:
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
                # a caller that went away (cancelled) gets no event: its answer will never leave
                batch = [(p, f) for p, f in batch if not f.done()]
                if batch:
                    await self._commit(batch)
                batch = []
        except BaseException as error:  # the loop is shutting down: nobody may wait forever
            for _, future in batch + self._pending:
                if not future.done():
                    future.set_exception(StoreError("the audit event could not be written: the store shut down"))
            self._pending.clear()
            if not isinstance(error, Exception):
                raise

    async def _commit(self, batch: list[tuple[PreparedEvent, asyncio.Future[StoredEvent]]]) -> None:
        try:
            stored = await self._write([p for p, _ in batch])
        except Exception as error:
            if len(batch) > 1 and self._per_event(error):
                for one in batch:
                    await self._commit([one])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(_copy(error))
            return
        self.transactions += 1
        self.events += len(stored)
        for (_, future), result in zip(batch, stored, strict=True):
            if not future.done():
                future.set_result(result)


def _copy(error: Exception) -> Exception:
    """One exception object per waiting caller: raising the same object from many tasks would
    splice their tracebacks together. The cause (the driver's error, for the log) is kept."""
    if isinstance(error, StoreError):
        copy = StoreError(error.message, hint=error.hint)
        copy.__cause__ = error.__cause__
        return copy
    return error


CLASSIFICATION_COLUMNS = (
    "database, schema_name, table_name, column_name, entity, confidence, evidence, source, fingerprint"
)


def classification_row(c: ColumnClassification) -> tuple[Any, ...]:
    return (c.database, c.schema, c.table, c.column, c.entity, float(c.confidence), c.evidence, c.source, c.fingerprint)


def classification_from_row(row: Any) -> ColumnClassification:
    return ColumnClassification(
        database=row[0],
        schema=row[1],
        table=row[2],
        column=row[3],
        entity=row[4],
        confidence=float(row[5]),
        evidence=row[6],
        source=row[7],
        fingerprint=row[8],
    )


APPROVAL_COLUMNS = (
    "id, created_at, expires_at, database, agent_id, on_behalf_of, statement, fingerprint, statement_kind,"
    " justification, policy_version, mode, status, decided_by, decided_at, decision_reason, decided_via, used_at,"
    " details"
)

#: the PostgreSQL channel a decision (and a use) of an approval is announced on, with its id
APPROVALS_CHANNEL = "bastion_approvals"


def approval_row(a: Approval, encode_time: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """The approval as the values of APPROVAL_COLUMNS, times encoded for the backend."""

    def when(moment: datetime | None) -> Any:
        return None if moment is None else encode_time(moment)

    details = json.dumps(
        {"tables": list(a.tables), "policy_ids": list(a.policy_ids), "reasons": list(a.reasons)},
        separators=(",", ":"),
    )
    return (
        a.id,
        when(a.created_at),
        when(a.expires_at),
        a.database,
        a.agent_id,
        a.on_behalf_of,
        a.statement,
        a.fingerprint,
        a.statement_kind,
        a.justification,
        a.policy_version,
        a.mode.value,
        a.status.value,
        a.decided_by,
        when(a.decided_at),
        a.decision_reason,
        a.decided_via,
        when(a.used_at),
        details,
    )


def approval_from_row(row: Sequence[Any], decode_time: Callable[[Any], datetime]) -> Approval:
    """Rebuild an approval from the values of APPROVAL_COLUMNS."""

    def when(value: Any) -> datetime | None:
        return None if value is None else as_utc(decode_time(value))

    try:
        details = json.loads(row[18])
    except (TypeError, ValueError):
        raise StoreError(f"approval {row[0]} cannot be read: its details are not JSON") from None
    created, expires = when(row[1]), when(row[2])
    assert created is not None and expires is not None
    return Approval(
        id=row[0],
        created_at=created,
        expires_at=expires,
        database=row[3],
        agent_id=row[4],
        on_behalf_of=row[5],
        statement=row[6],
        fingerprint=row[7],
        statement_kind=row[8],
        justification=row[9],
        policy_version=row[10],
        mode=ApprovalMode(row[11]),
        status=ApprovalStatus(row[12]),
        decided_by=row[13],
        decided_at=when(row[14]),
        decision_reason=row[15],
        decided_via=row[16],
        used_at=when(row[17]),
        tables=tuple(details.get("tables", ())),
        policy_ids=tuple(details.get("policy_ids", ())),
        reasons=tuple(details.get("reasons", ())),
    )


class ApprovalListener:
    """A live subscription to decisions made in other processes; `close` ends it."""

    #: False once the subscription is lost (the connection dropped): waiters then poll
    alive: bool = True

    async def close(self) -> None:  # pragma: no cover - trivial default
        return None


class StateStore(ABC):
    """One state store; every method is safe to call concurrently from one event loop."""

    #: "sqlite" or "postgres"
    dialect: str

    @abstractmethod
    async def append_audit(self, event: AuditEvent) -> StoredEvent:
        """Give the event the next sequence, link it to the chain, and commit it durably before
        returning. Appends are serialized (also across processes sharing the store)."""

    @abstractmethod
    async def audit_chain_head(self) -> ChainHead:
        """The last link written (sequence 0 and the genesis hash when the trail is empty)."""

    @abstractmethod
    async def save_classifications(self, classifications: list[ColumnClassification]) -> None:
        """Insert or replace each column's classification (keyed by database, schema, table and
        column) in one transaction."""

    @abstractmethod
    async def load_classifications(self, database: str) -> dict[tuple[str, str, str], ColumnClassification]:
        """The stored classifications of one configured database, by (schema, table, column)."""

    # -- approvals (server/approvals) ------------------------------------------------------------

    @abstractmethod
    async def create_approval(self, approval: Approval) -> None:
        """Insert a new approval request."""

    @abstractmethod
    async def get_approval(self, approval_id: str) -> Approval | None:
        """The approval with this id, or None."""

    @abstractmethod
    async def list_approvals(self, *, statuses: Sequence[str] | None = None, limit: int = 100) -> list[Approval]:
        """Approvals with a stored status in `statuses` (all when None), newest first."""

    @abstractmethod
    async def decide_approval(
        self, approval_id: str, *, approve: bool, by: str, reason: str | None, via: str, now: datetime
    ) -> Approval | None:
        """Approve or deny a request that is pending and not expired at `now`, atomically (also
        across processes); None when it was not (another decision came first, or it expired)."""

    @abstractmethod
    async def consume_approval(
        self,
        approval_id: str,
        *,
        agent_id: str,
        database: str,
        fingerprint: str,
        policy_version: str,
        now: datetime,
    ) -> Approval | None:
        """Mark an approved, unexpired approval with exactly this binding as used, in one
        transaction; of two racing callers exactly one gets the approval back, the other None."""

    async def listen_approvals(self, on_change: Callable[[str], None]) -> ApprovalListener | None:
        """Call `on_change(approval_id)` when any process decides or uses an approval. None when the
        backend cannot notify across processes (SQLite): callers then poll."""
        return None

    @abstractmethod
    async def close(self) -> None:
        """Release connections and threads; idempotent. Later calls raise StoreError."""

    @abstractmethod
    async def _select_audit(
        self,
        *,
        since: datetime | None,
        until: datetime | None,
        after_sequence: int | None,
        limit: int | None,
        newest_first: bool,
        tool: str | None = None,
    ) -> list[StoredEvent]:
        """Events with since <= time < until and sequence > after_sequence (and of `tool`, when
        given), ordered by sequence."""

    @abstractmethod
    async def _select_audit_rows(self, after_sequence: int, limit: int) -> list[tuple[int, str, str, str]]:
        """Raw rows (sequence, prev_hash, hash, record text) after `after_sequence`, in order."""

    async def first_audit_sequence(self) -> int | None:
        """The oldest event's sequence (1 until retention prunes), None for an empty trail."""
        rows = await self._select_audit_rows(0, 1)
        return rows[0][0] if rows else None

    async def iter_audit_rows(
        self, *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> AsyncIterator[list[tuple[int, str, str, str]]]:
        """The whole trail as raw rows, a batch at a time: what verification reads, without decoding
        each record into an event (server/audit/chain.py `verify_rows`)."""
        after = 0
        while True:
            batch = await self._select_audit_rows(after, batch_size)
            if batch:
                yield batch
            if len(batch) < batch_size:
                return
            after = batch[-1][0]

    @abstractmethod
    async def delete_audit_through(self, sequence: int) -> int:
        """Delete the events with a sequence up to `sequence`, in one transaction; returns how many.
        Only retention calls this, after recording a checkpoint of the last deleted event (see
        server/audit/retention.py); the chain head is left alone."""

    async def audit_events_of_tool(self, tool: str) -> list[StoredEvent]:
        """Every event of one tool, oldest first: how verify finds the checkpoints."""
        return await self._select_audit(
            since=None, until=None, after_sequence=None, limit=None, newest_first=False, tool=tool
        )

    async def audit_events(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> list[StoredEvent]:
        """Events with `since <= time < until` (naive datetimes are UTC), in sequence order: the
        order of the chain, which is also the order of commit even if clocks disagree."""
        if limit is not None and limit < 0:
            raise ValueError("limit must not be negative")
        return await self._select_audit(
            since=since, until=until, after_sequence=None, limit=limit, newest_first=newest_first
        )

    async def iter_audit_events(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> AsyncIterator[StoredEvent]:
        """All matching events, oldest first, read `batch_size` at a time so that exporting or verifying
        a trail of millions holds one batch in memory and no transaction open between batches."""
        if batch_size <= 0:
            raise ValueError("batch_size must be positive")
        after: int | None = None
        while True:
            batch = await self._select_audit(
                since=since, until=until, after_sequence=after, limit=batch_size, newest_first=False
            )
            for stored in batch:
                yield stored
            if len(batch) < batch_size:
                return
            after = batch[-1].sequence

    async def last_audit_events(self, n: int) -> list[StoredEvent]:
        """The last `n` events, oldest first, as `tail` prints them."""
        if n <= 0:
            return []
        newest = await self.audit_events(limit=n, newest_first=True)
        return newest[::-1]

    async def __aenter__(self) -> StateStore:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
