"""Who is calling.

An `Agent` is the principal every decision and audit event is about. It is fixed for a session:
no tool argument can set or change it. Over stdio it is the agent the operator configured
(`identity.stdio_agent`, or `BASTION_AGENT` in the environment, optionally proven by a token in
`BASTION_AGENT_TOKEN`); over HTTP it comes from a verified bearer token (`server/identity/verifier.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ClientInfo:
    """What the MCP client said about itself in the handshake. Self-reported, so it is recorded,
    never trusted for a decision."""

    name: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class Agent:
    """The verified caller. `auth_method` says how it proved who it is: "oauth" (a JWT over HTTP),
    "api_key" (a static key from `identity.api_keys`), "stdio_token" (a JWT in `BASTION_AGENT_TOKEN`
    checked at start-up) or "config" (nothing to prove: the operator named it)."""

    id: str
    groups: tuple[str, ...] = ()
    on_behalf_of: str | None = None
    auth_method: str = "config"
    client: ClientInfo = field(default_factory=ClientInfo)
    #: the token's `sub` and `jti`, for the audit trail (never the token itself); None without a token
    subject: str | None = None
    token_id: str | None = None
    #: OAuth scopes the token granted; per-tool scopes (`identity.oauth.tool_scopes`) are checked on them
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True)
class TransportInfo:
    """What the transport knows about one request, gathered at the tool boundary."""

    transport: str  # "stdio" | "http" | "sse" | "memory"
    session_id: str
    client: ClientInfo
    request_meta: dict[str, Any] = field(default_factory=dict)
