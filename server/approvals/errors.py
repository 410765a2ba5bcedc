"""The refusals of the approval flow, for the agent and for the approver.

The agent's side (`ApprovalNotUsable`, a `PolicyDenied`) reads like any refusal ("Refused: approval
... was already used") and is audited as a deny. The approver's side has its own codes, which the
HTTP API maps to status codes and the command line to one line and a non-zero exit.
"""

from __future__ import annotations

from server.errors import BastionError, PolicyDenied


class ApprovalNotUsable(PolicyDenied):
    """A query named an approval that does not cover it (unknown, another agent's or statement's,
    pending, denied, expired, used, or from other policies)."""


class ApprovalNotNeeded(BastionError):
    """request_approval for a statement policy allows as it is."""

    code = "approval_not_needed"


class ApprovalError(BastionError):
    """Base of the approver-side refusals."""

    code = "approval"
    http_status = 400


class ApprovalUnavailable(ApprovalError):
    """Approvals cannot work here (no state store)."""

    code = "approval_unavailable"
    http_status = 503


class UnknownApproval(ApprovalError):
    code = "not_found"
    http_status = 404


class ApprovalConflict(ApprovalError):
    """The request can no longer be decided: already decided, used, expired, or stale."""

    code = "approval_conflict"
    http_status = 409


class NotAnApprover(ApprovalError):
    """The person may not decide this request (policy, or it is their own)."""

    code = "approval_forbidden"
    http_status = 403


class NotAuthenticated(ApprovalError):
    """The HTTP API could not tell who is asking."""

    code = "authentication"
    http_status = 401


class InvalidApprovalArgument(BastionError):
    """A tool argument out of its range (wait_s), or missing in substance (justification)."""

    code = "invalid_argument"
