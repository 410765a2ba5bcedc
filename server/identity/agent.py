"""Who is calling.

An `Agent` is the principal every decision and audit event is about. It is fixed for a session:
no tool argument can set or change it. Over stdio it is the agent the operator configured
(`identity.stdio_agent`, or `BASTION_AGENT` in the environment); over HTTP it will come from a
verified token (the identity issue).
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
    id: str
    groups: tuple[str, ...] = ()
    on_behalf_of: str | None = None
    auth_method: str = "config"
    client: ClientInfo = field(default_factory=ClientInfo)


@dataclass(frozen=True)
class TransportInfo:
    """What the transport knows about one request, gathered at the tool boundary."""

    transport: str  # "stdio" | "http" | "sse" | "memory"
    session_id: str
    client: ClientInfo
    request_meta: dict[str, Any] = field(default_factory=dict)
