"""Refused authentications: one log line with the precise reason, and one audit event.

A refusal is reported exactly once per HTTP request. When the request passes through the guard
(http_auth.AuthGuard, which `bastion serve` installs), the token verifier only notes its reason in
the request's `RefusalBox` and the guard reports when the 401/403 goes out, which also covers the
requests the verifier never sees (no Authorization header, another scheme). Without the guard
the verifier reports by itself. Either way the event is committed before the refusal leaves.

Never in a log line or an event: the token, an API key, a signature. Claims of a token that failed
verification are attacker-controlled, so they are stored only as `unverified_claims` in the
event's arguments, and `agent_id` stays empty.
"""

from __future__ import annotations

import contextvars
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from server.audit.event import AuditEvent
from server.errors import AuditUnavailable

if TYPE_CHECKING:
    from server.identity.verifier import BastionAccessToken
    from server.runtime import Runtime

log = logging.getLogger("bastion.identity")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

AUTH_TOOL = "(authentication)"


@dataclass(frozen=True)
class Refusal:
    status: int  # 401: no valid credential; 403: valid, but a required scope is missing
    reason: str
    #: the method that was attempted: "oauth", "api_key", or None (no credential at all)
    method: str | None = None
    #: safe claims (claims.safe_claims); unverified unless `identity` is set
    claims: dict[str, Any] = field(default_factory=dict)
    #: the verified identity, for a 403
    identity: BastionAccessToken | None = None


@dataclass(frozen=True)
class RequestFacts:
    """What the HTTP request says about where it came from; recorded with a refusal."""

    method: str = ""
    path: str = ""
    remote: str | None = None
    user_agent: str | None = None
    session_id: str | None = None

    @classmethod
    def of(cls, scope: dict[str, Any]) -> RequestFacts:
        """From an ASGI scope; every value capped and stripped of control characters (they are the
        caller's to choose, and go into a log line)."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = scope.get("client")
        return cls(
            method=_clean(scope.get("method", ""))[:16],
            path=_clean(scope.get("path", ""))[:200],
            remote=_clean(client[0]) if client else None,
            user_agent=_clean(headers.get("user-agent", ""))[:200] or None,
            session_id=_clean(headers.get("mcp-session-id", ""))[:200] or None,
        )


def _clean(value: Any) -> str:
    return _CONTROL.sub("?", str(value))


@dataclass
class RefusalBox:
    """Per-request: whether the verifier ran, and the refusal it decided on."""

    verifier_called: bool = False
    refusal: Refusal | None = None


current_box: contextvars.ContextVar[RefusalBox | None] = contextvars.ContextVar("bastion_refusal_box", default=None)

RefusalHook = Callable[[Refusal, RequestFacts | None], Awaitable[None]]


def _claims_summary(claims: dict[str, Any]) -> str:
    keys = ("kid", "alg", "iss", "sub", "azp", "client_id", "jti")
    parts = [f"{key}={claims[key]!r}" for key in keys if key in claims]
    return f" [{', '.join(parts)}]" if parts else ""


class RefusalAuditor:
    """Logs a refusal and commits its audit event through the runtime's recorder."""

    def __init__(self, runtime: Callable[[], Runtime | None] | None, transport: str) -> None:
        self._runtime = runtime
        self.transport = transport

    async def __call__(self, refusal: Refusal, request: RequestFacts | None = None) -> None:
        where = f" {request.method} {request.path} from {request.remote or '?'}" if request else ""
        summary = _claims_summary(refusal.claims)
        log.warning("authentication refused (%d%s): %s%s", refusal.status, where, refusal.reason, summary)
        runtime = self._runtime() if self._runtime is not None else None
        if runtime is None:
            return
        try:
            await runtime.recorder.record(self.event(refusal, request))
        except AuditUnavailable:
            log.error("the refused authentication above could not be audited")

    def event(self, refusal: Refusal, request: RequestFacts | None) -> AuditEvent:
        arguments: dict[str, Any] = {"status": refusal.status}
        if request is not None:
            arguments.update(method=request.method, path=request.path, remote=request.remote)
            if request.user_agent:
                arguments["user_agent"] = request.user_agent
        identity = refusal.identity
        if refusal.claims:
            arguments["claims" if identity is not None else "unverified_claims"] = refusal.claims
        return AuditEvent(
            id=str(uuid.uuid4()),
            time=datetime.now(UTC),
            tool=AUTH_TOOL,
            decision="deny",
            session_id=request.session_id if request else None,
            transport=self.transport,
            agent_id=identity.agent_id if identity else None,
            groups=tuple(identity.groups) if identity else (),
            on_behalf_of=identity.on_behalf_of if identity else None,
            auth_method=identity.auth_method if identity else refusal.method,
            arguments=arguments,
            reasons=(refusal.reason,),
            error=f"authentication: {refusal.reason}",
        )
