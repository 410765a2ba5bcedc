"""What an approval is: one request for a human to agree to exactly one statement, and its fate.

A plain frozen value shared by the store (which persists it), the pipeline (which checks it before a
write runs) and the approver interfaces (which decide it). It imports nothing of MCP, the store or
the request path, so every one of those can depend on it.

Stored statuses are `pending`, `approved`, `denied` and `used`; `expired` is never stored but read
off the clock (`status_at`), so an approval expires at its `expires_at` even when no process is
running to mark it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class ApprovalStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    USED = "used"


class ApprovalMode(StrEnum):
    """How the approval may be given: by a permitted human out of band (the CLI, the HTTP API), or,
    where a policy says so with `@approval("client")`, by the person in the MCP client."""

    HUMAN = "human"
    CLIENT = "client"


#: statuses a decision has been made in (or that can no longer change)
SETTLED = frozenset({ApprovalStatus.APPROVED, ApprovalStatus.DENIED, ApprovalStatus.EXPIRED, ApprovalStatus.USED})


@dataclass(frozen=True)
class Approval:
    """One approval request. The binding is (`fingerprint`, `database`, `agent_id`,
    `policy_version`, `expires_at`): a query may use the approval only when all of them match."""

    id: str
    created_at: datetime
    expires_at: datetime
    database: str
    agent_id: str
    #: the human the requesting agent acts for; that person may never approve the request
    on_behalf_of: str | None
    #: the statement as the agent sent it (shown to approvers)
    statement: str
    #: hash of the normalized statement (binding.fingerprint): what a later query must match
    fingerprint: str
    statement_kind: str
    tables: tuple[str, ...]
    justification: str
    policy_version: str
    #: the policies that sent the statement to approval, and their reasons
    policy_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    mode: ApprovalMode
    status: ApprovalStatus
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    #: "cli", "http" or "client"
    decided_via: str | None = None
    used_at: datetime | None = None

    def status_at(self, now: datetime) -> ApprovalStatus:
        """The status as of `now`: a pending or approved request past its expiry is expired."""
        if self.status in (ApprovalStatus.PENDING, ApprovalStatus.APPROVED) and now >= self.expires_at:
            return ApprovalStatus.EXPIRED
        return self.status

    def summary(self) -> str:
        """One line naming the request, for messages and notifications."""
        kind = self.statement_kind.upper()
        return f"{kind} on {self.database} by agent {self.agent_id}"
