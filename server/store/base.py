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

import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from server.audit.chain import ChainHead, canonical_json, event_from_record, hashed_json
from server.audit.event import AuditEvent, StoredEvent
from server.errors import BastionError
from server.pii.model import ColumnClassification

DEFAULT_BATCH_SIZE = 1000


class StoreError(BastionError):
    """The state store could not be opened, read or written."""

    code = "store"


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
    #: the full record's canonical JSON, stored as the event's truth
    record_json: str
    #: the canonical JSON of the record's hashed form (see server/audit/chain.py)
    hashed_json: str


def prepare_event(event: AuditEvent) -> PreparedEvent:
    """Raises StoreError when the event cannot be encoded (NaN, a value JSON cannot hold), before
    anything is written."""
    if not isinstance(event.time, datetime):
        raise StoreError("the audit event has no valid time")
    try:
        text = canonical_json(replace(event, time=as_utc(event.time)).to_record())
        record = json.loads(text)
        return PreparedEvent(event_from_record(record), text, hashed_json(record))
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
        raise StoreError(f"audit event {sequence} cannot be read: {error}") from None
    return StoredEvent(sequence=sequence, prev_hash=prev_hash, hash=hash_, event=event)


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
    ) -> list[StoredEvent]:
        """Events with since <= time < until and sequence > after_sequence, ordered by sequence."""

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
