"""Writes each tool call's audit event, or stops the call: no audit, no data.

The recorder is the one place where a store failure becomes the caller's error. Whatever went wrong
(the database is down, the disk is full, the event would not encode), the agent sees the same
`AuditUnavailable` with no driver text and no DSN in it, and the operator finds the cause, scrubbed of
passwords, in the log.
"""

from __future__ import annotations

import logging

from server.audit.event import AuditEvent, StoredEvent
from server.config import redact_dsn
from server.errors import AuditUnavailable
from server.store.base import StateStore

log = logging.getLogger(__name__)

_MESSAGE = "the audit trail could not be written, so no data was returned"
_HINT = (
    "Nothing was recorded for this call; try again shortly. If it keeps failing, the operator should "
    "check Bastion's state store (the server log says why)."
)
_MAX_LOGGED_CHARS = 500


class AuditRecorder:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    async def record(self, event: AuditEvent) -> StoredEvent:
        """Commit the event; raise AuditUnavailable if it was not committed. Cancellation passes
        through untouched: the caller is going away and will send nothing anyway."""
        try:
            return await self.store.append_audit(event)
        except Exception as error:
            log.error(
                "audit event %r (tool %r) could not be written: %s",
                event.id,
                event.tool,
                describe_failure(error),
            )
            raise AuditUnavailable(_MESSAGE, hint=_HINT) from None


def describe_failure(error: BaseException) -> str:
    """The error and the causes chained to it, for the log: each message with any DSN password
    replaced, and capped, since a driver message can be long."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(parts) < 4:
        seen.add(id(current))
        text = redact_dsn(str(current)).replace("\n", " ")[:_MAX_LOGGED_CHARS]
        parts.append(f"{type(current).__name__}: {text}" if text else type(current).__name__)
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)
