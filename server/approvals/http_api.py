"""The approver's HTTP API on the server: list, show, approve and deny.

    GET  /approvals                    pending requests this person may decide (?status=all: every one)
    GET  /approvals/{id}               one request
    POST /approvals/{id}/approve       body (optional JSON): {"reason": "..."}
    POST /approvals/{id}/deny          body (optional JSON): {"reason": "..."}

Callers are people, authenticated like the MCP endpoint's callers: a bearer token verified by the
same `BastionTokenVerifier` (issuer, audience, expiry, signature, JWKS). The person is the token's
user claim (`identity.oauth.user_claim`), their groups the token's groups claim plus any that
`identity.users` grants that name. A token without a user (client credentials) and a static API key
(an agent's credential) are refused, and when `identity.oauth.tool_scopes` has an `approvals` entry
the token must hold those scopes.

Fail closed: without `identity.oauth` there is no way to tell who a person is, so every request is
refused with 403 and a pointer to `bastion approvals` on the command line.

A person sees the requests of databases policy lets them approve, and the requests made on their
own behalf; anything else is answered 404, like an id that does not exist.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from server.approvals.approvers import Approver, is_requester, may_approve
from server.approvals.errors import ApprovalError, ApprovalUnavailable, NotAnApprover, NotAuthenticated, UnknownApproval
from server.approvals.model import Approval
from server.approvals.service import ApprovalService, service_for
from server.config import BastionConfig
from server.identity.oauth import TokenRejected
from server.identity.verifier import BastionTokenVerifier

log = logging.getLogger(__name__)

APPROVALS_SCOPE_KEY = "approvals"
MAX_BODY_BYTES = 16_384

Handler = Callable[[Request], Awaitable[Response]]


class _Holder(Protocol):
    config: BastionConfig
    runtime: Any


def as_json(approval: Approval) -> dict[str, Any]:
    now = datetime.now(UTC)

    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {
        "approval_id": approval.id,
        "status": approval.status_at(now).value,
        "database": approval.database,
        "agent_id": approval.agent_id,
        "on_behalf_of": approval.on_behalf_of,
        "statement_kind": approval.statement_kind,
        "sql": approval.statement,
        "tables": list(approval.tables),
        "justification": approval.justification,
        "policy_version": approval.policy_version,
        "policy_ids": list(approval.policy_ids),
        "reasons": list(approval.reasons),
        "mode": approval.mode.value,
        "created_at": iso(approval.created_at),
        "expires_at": iso(approval.expires_at),
        "decided_by": approval.decided_by,
        "decided_at": iso(approval.decided_at),
        "decision_reason": approval.decision_reason,
        "decided_via": approval.decided_via,
        "used_at": iso(approval.used_at),
    }


def _error(error: ApprovalError) -> JSONResponse:
    body = {"error": error.code, "message": error.message}
    if error.hint:
        body["hint"] = error.hint
    headers = {"WWW-Authenticate": 'Bearer realm="bastion-approvals"'} if error.http_status == 401 else None
    return JSONResponse(body, status_code=error.http_status, headers=headers)


class ApprovalsHttpApi:
    """The route handlers; `routes()` gives (path, methods, handler) for the app to register."""

    def __init__(self, holder: _Holder) -> None:
        self.holder = holder
        self.config = holder.config
        oauth = self.config.identity.oauth
        self._verifier = BastionTokenVerifier(self.config.identity) if oauth is not None else None

    def routes(self) -> list[tuple[str, list[str], Handler]]:
        return [
            ("/approvals", ["GET"], self._guarded(self.list)),
            ("/approvals/{approval_id}", ["GET"], self._guarded(self.show)),
            ("/approvals/{approval_id}/approve", ["POST"], self._guarded(self.approve)),
            ("/approvals/{approval_id}/deny", ["POST"], self._guarded(self.deny)),
        ]

    def _guarded(self, handler: Callable[[Request, Approver, ApprovalService], Awaitable[Response]]) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                approver = await self.authenticate(request)
                runtime = self.holder.runtime
                if runtime is None:
                    raise ApprovalUnavailable("the server is not ready", hint="Try again shortly.")
                return await handler(request, approver, service_for(runtime))
            except ApprovalError as error:
                return _error(error)
            except Exception as error:  # fail closed, say nothing internal
                log.exception("approvals API: unexpected %s", type(error).__name__)
                return JSONResponse({"error": "internal", "message": "internal error"}, status_code=500)

        return endpoint

    async def authenticate(self, request: Request) -> Approver:
        """The person behind the request's bearer token, or an ApprovalError (401/403)."""
        oauth = self.config.identity.oauth
        if oauth is None or self._verifier is None:
            raise NotAnApprover(
                "the approvals HTTP API is off: it needs identity.oauth, so that approvers sign in with tokens",
                hint="Use `bastion approvals list|approve|deny --as NAME` on the command line.",
            )
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise NotAuthenticated("a bearer token is required", hint="Send Authorization: Bearer <token>.")
        try:
            access = await self._verifier.authenticate(token.strip())
        except TokenRejected as rejected:
            log.warning("approvals API: token refused: %s", rejected.reason)
            raise NotAuthenticated("the bearer token was refused", hint="Sign in again for a fresh token.") from None
        if access.auth_method != "oauth":
            raise NotAnApprover("an API key is an agent's credential; approving needs a person's token")
        person = access.on_behalf_of
        if not person:
            raise NotAnApprover(f"this token names no person (claim {oauth.user_claim!r}); approving needs one")
        missing = [s for s in oauth.tool_scopes.get(APPROVALS_SCOPE_KEY, ()) if s not in access.scopes]
        if missing:
            raise NotAnApprover(f"the token lacks the scope {' '.join(missing)} the approvals API needs")
        configured = self.config.identity.users.get(person)
        groups = tuple(dict.fromkeys([*access.groups, *(configured.groups if configured else ())]))
        return Approver(
            person,
            groups,
            auth_method="oauth",
            subject=access.subject,
            token_id=access.token_id,
            client_id=access.agent_id,
        )

    def _visible(self, service: ApprovalService, approver: Approver, approval: Approval) -> bool:
        if is_requester(approver.name, approval):
            return True
        return may_approve(service.policy(), approver, approval, transport="http").allowed

    async def list(self, request: Request, approver: Approver, service: ApprovalService) -> Response:
        everything = request.query_params.get("status", "pending") == "all"
        approvals = await service.list(pending_only=not everything, limit=200)
        shown = [as_json(a) for a in approvals if self._visible(service, approver, a)]
        return JSONResponse({"approvals": shown, "as": approver.name})

    async def _one(self, request: Request, approver: Approver, service: ApprovalService) -> Approval:
        approval_id = str(request.path_params.get("approval_id", ""))
        approval = await service.get(approval_id)
        if not self._visible(service, approver, approval):
            raise UnknownApproval(f"approval {approval_id!r} does not exist")
        return approval

    async def show(self, request: Request, approver: Approver, service: ApprovalService) -> Response:
        return JSONResponse(as_json(await self._one(request, approver, service)))

    async def _decide(self, request: Request, approver: Approver, service: ApprovalService, approve: bool) -> Response:
        approval = await self._one(request, approver, service)
        reason = await _reason(request)
        decided = await service.decide(approval.id, approver, approve=approve, reason=reason, via="http")
        return JSONResponse(as_json(decided))

    async def approve(self, request: Request, approver: Approver, service: ApprovalService) -> Response:
        return await self._decide(request, approver, service, True)

    async def deny(self, request: Request, approver: Approver, service: ApprovalService) -> Response:
        return await self._decide(request, approver, service, False)


async def _reason(request: Request) -> str | None:
    body = await request.body()
    if not body.strip():
        return None
    if len(body) > MAX_BODY_BYTES:
        raise ApprovalError("the request body is too large")
    try:
        data = json.loads(body)
    except ValueError:
        raise ApprovalError('the body must be JSON, e.g. {"reason": "checked with the team"}') from None
    reason = data.get("reason") if isinstance(data, dict) else None
    if reason is not None and not isinstance(reason, str):
        raise ApprovalError("reason must be a string")
    return reason
