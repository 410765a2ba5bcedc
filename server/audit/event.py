"""The audit event: one per tool call, allowed, refused or failed.

Values from rows are never stored here; arguments are stored as the caller sent them (SQL in full)
minus anything secret. Fields that later features fill (policy version, masks, approvals, prompt
context) exist from the start so the stored shape does not change under an auditor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class AuditEvent:
    id: str
    time: datetime  # timezone-aware, UTC
    tool: str
    decision: str  # "allow" | "deny" | "approval_required" | "error"
    session_id: str | None = None
    transport: str | None = None
    client_name: str | None = None
    client_version: str | None = None
    agent_id: str | None = None
    groups: tuple[str, ...] = ()
    on_behalf_of: str | None = None
    auth_method: str | None = None
    #: the verified token's `jti` and `sub` (never the token itself)
    token_jti: str | None = None
    token_sub: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    purpose: str | None = None
    conversation_id: str | None = None
    request_meta: dict[str, Any] = field(default_factory=dict)
    database: str | None = None
    statement_kind: str | None = None
    tables: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    pii_columns: tuple[str, ...] = ()
    masked_columns: tuple[str, ...] = ()
    #: result column name -> cells masked in it (counts only, never values)
    masked_cells: dict[str, int] = field(default_factory=dict)
    policy_ids: tuple[str, ...] = ()
    policy_version: str | None = None
    reasons: tuple[str, ...] = ()
    approval_id: str | None = None
    approver: str | None = None
    row_count: int | None = None
    truncated: bool | None = None
    duration_ms: float | None = None
    error: str | None = None

    def to_record(self) -> dict[str, Any]:
        """A JSON-ready dict (lists for tuples, ISO time), the form exports and hashes use."""
        record = asdict(self)
        record["time"] = self.time.isoformat()
        for key, value in record.items():
            if isinstance(value, tuple):
                record[key] = list(value)
        return record


@dataclass(frozen=True)
class StoredEvent:
    """An event as the store holds it: its place in the chain and the hashes that link it."""

    sequence: int
    prev_hash: str
    hash: str
    event: AuditEvent
