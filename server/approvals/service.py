"""The approval service: decide, read and wait, with the audit trail and notifications.

One per state store: the server starts it with its runtime (`start_approvals`, from app.py) and the
command line builds one for a single decision. Deciding is where the rules live:

1. the request exists and is still pending (not decided, used or expired);
2. the approver is not the human the requesting agent acts for (nor, over HTTP, the requesting
   agent's own OAuth client): nobody approves their own request;
3. an approval is refused once the policies changed since the request (its version is bound into
   it, so it could never be used); a denial is always allowed;
4. policy permits the approver the Cedar `approve` action on the request's database;
5. the store flips the status atomically (`decide_approval`), so of two approvers racing, one wins
   and the other is told who came first.

Each decision, and each refused attempt to decide, is an audit event (tool `(approve)` or
`(deny)`) carrying the approval id, the approver and the reason, so the trail tells the story:
request, decision, run. Decisions wake the callers waiting in `approval_status` and go to the
webhook.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from server.approvals.approvers import Approver, is_requester, may_approve
from server.approvals.errors import (
    ApprovalConflict,
    ApprovalError,
    ApprovalUnavailable,
    NotAnApprover,
    UnknownApproval,
)
from server.approvals.model import Approval, ApprovalStatus
from server.approvals.waiting import DecisionWaiter
from server.approvals.webhook import WebhookNotifier, payload
from server.audit.event import AuditEvent
from server.audit.recorder import AuditRecorder
from server.config import BastionConfig
from server.errors import AuditUnavailable
from server.policy.engine import NoPolicyEngine, PolicyEngine
from server.store.base import StateStore

if TYPE_CHECKING:
    from server.runtime import Runtime

log = logging.getLogger(__name__)

Engine = PolicyEngine | NoPolicyEngine
MAX_REASON_CHARS = 2_000


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "an unknown time"


class ApprovalService:
    def __init__(
        self,
        config: BastionConfig,
        store: StateStore,
        recorder: AuditRecorder,
        policy: Callable[[], Engine],
        *,
        notifier: WebhookNotifier | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.recorder = recorder
        self.policy = policy
        self.notifier = notifier or WebhookNotifier(config.approvals.webhook)
        self.waiter = DecisionWaiter(store)

    # -- reading -------------------------------------------------------------------------------

    async def get(self, approval_id: str) -> Approval:
        approval = await self.store.get_approval(approval_id.strip())
        if approval is None:
            raise UnknownApproval(
                f"approval {approval_id!r} does not exist",
                hint="List pending requests with `bastion approvals list`.",
            )
        return approval

    async def list(self, *, pending_only: bool = True, limit: int = 100) -> list[Approval]:
        """Pending (and unexpired) requests, or all of them, newest first."""
        if not pending_only:
            return await self.store.list_approvals(limit=limit)
        now = datetime.now(UTC)
        pending = await self.store.list_approvals(statuses=("pending",), limit=limit)
        return [a for a in pending if a.status_at(now) is ApprovalStatus.PENDING]

    async def wait(self, approval_id: str, timeout_s: float) -> Approval:
        """The approval once decided (or expired), or as it is after `timeout_s`."""
        approval = await self.get(approval_id)
        if timeout_s <= 0 or approval.status_at(datetime.now(UTC)) is not ApprovalStatus.PENDING:
            return approval
        return await self.waiter.wait(approval.id, timeout_s, lambda: self.get(approval.id))

    # -- requests ------------------------------------------------------------------------------

    def requested(self, approval: Approval) -> None:
        """A new request was stored (and audited by its tool call): tell the approvers."""
        self.notifier.notify(payload("requested", approval, public_url=self.config.approvals.public_url))

    # -- decisions -----------------------------------------------------------------------------

    async def decide(
        self, approval_id: str, approver: Approver, *, approve: bool, reason: str | None, via: str
    ) -> Approval:
        """Approve or deny as `approver` (see the module docstring for the rules); raises an
        ApprovalError saying why not."""
        reason = (reason or "").strip()[:MAX_REASON_CHARS] or None
        approval = await self.get(approval_id)
        engine = self.policy()
        try:
            self._check_open(approval)
            if approve:
                self._check_not_own(approval, approver)
                self._check_policy_version(approval, engine)
            answer = may_approve(engine, approver, approval, transport=via)
            if not answer.allowed:
                why = "; ".join(answer.reasons) or "no policy permits the approve action for this person"
                raise NotAnApprover(
                    f"{approver.name} may not decide approval {approval.id} ({approval.summary()}): {why}",
                    hint="Ask a person the approve policies name (request_approval lists who).",
                )
        except ApprovalError as refusal:
            await self._audit(approval, approver, approve=approve, reason=reason, via=via, error=refusal)
            raise
        return await self._record(approval, approver, approve=approve, reason=reason, via=via, engine=engine)

    async def confirm_in_client(self, approval_id: str, person: str, *, approve: bool, reason: str | None) -> Approval:
        """The answer of the person in the MCP client, for a request whose policies say that is
        enough (`@approval("client")`): no Cedar `approve` check, no own-request rule (the person
        at the client is who the policy asks)."""
        approval = await self.get(approval_id)
        approver = Approver(person, auth_method="client")
        try:
            self._check_open(approval)
            if approve:
                self._check_policy_version(approval, self.policy())
        except ApprovalError as refusal:
            await self._audit(approval, approver, approve=approve, reason=reason, via="client", error=refusal)
            raise
        return await self._record(approval, approver, approve=approve, reason=reason, via="client", engine=None)

    async def _record(
        self,
        approval: Approval,
        approver: Approver,
        *,
        approve: bool,
        reason: str | None,
        via: str,
        engine: Engine | None,
    ) -> Approval:
        now = datetime.now(UTC)
        decided = await self.store.decide_approval(
            approval.id, approve=approve, by=approver.name, reason=reason, via=via, now=now
        )
        if decided is None:  # someone else decided first, or it expired meanwhile
            current = await self.get(approval.id)
            try:
                self._check_open(current)
                raise ApprovalConflict(f"approval {approval.id} could not be decided; try again")
            except ApprovalError as refusal:
                await self._audit(current, approver, approve=approve, reason=reason, via=via, error=refusal)
                raise
        await self._audit(decided, approver, approve=approve, reason=reason, via=via, error=None)
        self.waiter.wake(decided.id)
        event = "approved" if approve else "denied"
        self.notifier.notify(payload(event, decided, public_url=self.config.approvals.public_url, who=approver.name))
        return decided

    @staticmethod
    def _check_open(approval: Approval) -> None:
        status = approval.status_at(datetime.now(UTC))
        if status is ApprovalStatus.PENDING:
            return
        if status in (ApprovalStatus.APPROVED, ApprovalStatus.DENIED):
            raise ApprovalConflict(
                f"approval {approval.id} was already {status.value} by {approval.decided_by} "
                f"at {_when(approval.decided_at)}"
            )
        if status is ApprovalStatus.USED:
            raise ApprovalConflict(f"approval {approval.id} was already approved and used")
        raise ApprovalConflict(f"approval {approval.id} expired at {_when(approval.expires_at)}")

    @staticmethod
    def _check_not_own(approval: Approval, approver: Approver) -> None:
        if is_requester(approver.name, approval):
            raise NotAnApprover(
                f"{approver.name} cannot approve approval {approval.id}: the agent requested it on their "
                "behalf, and nobody approves their own request",
                hint="Ask another approver.",
            )
        if approver.client_id and approver.client_id == approval.agent_id:
            raise NotAnApprover(
                f"approval {approval.id} was requested by agent {approval.agent_id}, whose own token cannot approve it",
                hint="Approve with a person's token issued to another client, or from the command line.",
            )

    @staticmethod
    def _check_policy_version(approval: Approval, engine: Engine) -> None:
        if engine.version != approval.policy_version:
            raise ApprovalConflict(
                f"the policies changed since approval {approval.id} was requested (version "
                f"{approval.policy_version}, now {engine.version}), so it could never be used; "
                "the agent must request approval again"
            )

    async def _audit(
        self,
        approval: Approval,
        approver: Approver,
        *,
        approve: bool,
        reason: str | None,
        via: str,
        error: ApprovalError | None,
    ) -> None:
        """One event per decision or refused attempt. A decision that cannot be audited still
        stands (the store has it) but the approver is told, since the trail must show it."""
        engine = self.policy()
        verb = "approved" if approve else "denied"
        reasons: tuple[str, ...] = (
            (f"{verb} by {approver.name}" + (f": {reason}" if reason else ""),) if error is None else (error.message,)
        )
        event = AuditEvent(
            id=str(uuid.uuid4()),
            time=datetime.now(UTC),
            tool="(approve)" if approve else "(deny)",
            decision=("allow" if approve else "deny") if error is None else "deny",
            transport=via,
            agent_id=approval.agent_id,
            on_behalf_of=approval.on_behalf_of,
            groups=approver.groups,
            auth_method=approver.auth_method,
            token_sub=approver.subject,
            token_jti=approver.token_id,
            arguments={
                "approval_id": approval.id,
                "action": "approve" if approve else "deny",
                "reason": reason,
                "sql": approval.statement,
                "approver": approver.name,
            },
            purpose=approval.justification,
            database=approval.database,
            statement_kind=approval.statement_kind,
            tables=approval.tables,
            policy_version=getattr(engine, "version", None),
            reasons=reasons,
            approval_id=approval.id,
            approver=approver.name,
            error=f"{error.code}: {error.message}" if error is not None else None,
        )
        try:
            await self.recorder.record(event)
        except AuditUnavailable as failure:
            if error is None:
                raise ApprovalUnavailable(
                    f"approval {approval.id} was {verb}, but the audit trail could not record it",
                    hint="Check Bastion's state store; the decision stands.",
                ) from failure
            log.error("could not audit a refused approval decision")

    async def close(self) -> None:
        await self.waiter.close()
        await self.notifier.close()


_services: weakref.WeakKeyDictionary[StateStore, ApprovalService] = weakref.WeakKeyDictionary()


async def start_approvals(runtime: Runtime) -> ApprovalService:
    """The runtime's approval service, started (the server calls this when it opens its runtime,
    and closes the result when it closes the runtime)."""
    return service_for(runtime)


def service_for(runtime: Runtime) -> ApprovalService:
    """The approval service of `runtime`'s state store, created on first use."""
    store = runtime.store
    if store is None:
        raise ApprovalUnavailable(
            "approvals need the state store, and this server has none",
            hint="The operator must configure state.dsn.",
        )
    service = _services.get(store)
    if service is None:
        service = ApprovalService(runtime.config, store, runtime.recorder, lambda: runtime.policy)
        _services[store] = service
    return service
