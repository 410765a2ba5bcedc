"""One exception tree for the whole server.

Every error a caller can see derives from `BastionError`. Its `message` is written for the agent:
it says what was refused or what failed, and `hint` says what to do next. Neither may contain a row
value, a DSN, a token or a traceback; driver exceptions are translated into these classes at the
stage that called the driver, and tools map them to MCP tool errors at the boundary.
"""

from __future__ import annotations


class BastionError(Exception):
    """Base of every error Bastion reports to a caller."""

    #: short machine-readable label, recorded in the audit trail
    code = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} {self.hint}"


class ConfigError(BastionError):
    """The configuration is invalid; the message names the key's path."""

    code = "config"


class AuthenticationError(BastionError):
    """The caller could not be identified."""

    code = "authentication"


class PolicyDenied(BastionError):
    """Policy refuses the call."""

    code = "denied"

    def __init__(self, message: str, *, hint: str | None = None, policy_ids: tuple[str, ...] = ()) -> None:
        super().__init__(message, hint=hint)
        self.policy_ids = policy_ids


class ApprovalRequired(PolicyDenied):
    """Policy allows the call only after a human approves it."""

    code = "approval_required"


class SQLRejected(BastionError):
    """The SQL analyzer refused the statement (it does not understand it, or it is never allowed)."""

    code = "sql_rejected"


class QueryFailed(BastionError):
    """The database refused or failed the statement, or is unreachable."""

    code = "query_failed"

    def __init__(self, message: str, *, hint: str | None = None, sqlstate: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.sqlstate = sqlstate


class AuditUnavailable(BastionError):
    """The audit event could not be committed, so no data may leave."""

    code = "audit_unavailable"
