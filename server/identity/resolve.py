"""Turn what the transport knows into an `Agent`, and check a tool's scopes for it.

Where the identity comes from, in order:
1. a token the SDK's bearer middleware verified for this HTTP request (`get_access_token()`, a
   `BastionAccessToken` from verifier.py): auth_method "oauth" or "api_key";
2. over HTTP/SSE with `identity.oauth` or `identity.api_keys` configured and no verified token:
   refused (AuthenticationError). The SDK middleware never lets such a call through; this is the
   fail-closed backstop should that ever change;
3. over stdio, the identity `BASTION_AGENT_TOKEN` proved at start-up: "stdio_token" (or "api_key");
4. otherwise the configured local agent (`identity.stdio_agent` / `BASTION_AGENT`): "config". Over
   HTTP without authentication configured that is still the identity (local development; the
   server binds to loopback by default and warns otherwise).

Groups are the token's, plus any the operator lists for that agent id in `identity.agents` (a
client-credentials token usually carries no groups; config is the operator's to grant).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from mcp.server.auth.middleware.auth_context import get_access_token

from server.config import BastionConfig
from server.errors import AuthenticationError, PolicyDenied
from server.identity.agent import Agent, TransportInfo
from server.identity.http_auth import HTTP_TRANSPORTS, http_auth_enabled
from server.identity.stdio import proven_stdio_agent
from server.identity.verifier import BastionAccessToken


class InsufficientScope(PolicyDenied):
    """The token is valid but was not granted a scope this tool needs (`identity.oauth.tool_scopes`).
    A refusal like a policy's ("Refused: ...", decision deny in the audit), naming the scope."""

    def __init__(self, tool: str, missing: Sequence[str], agent: Agent | None = None) -> None:
        scopes = " ".join(missing)
        super().__init__(
            f"the {tool} tool needs the OAuth scope {scopes}, which this token was not granted.",
            hint=f"Ask the identity provider for a token with scope {scopes}; the server's protected "
            "resource metadata (/.well-known/oauth-protected-resource) lists the scopes it knows.",
        )
        self.missing = tuple(missing)
        self.agent = agent


def _groups(config: BastionConfig, agent_id: str, groups: Sequence[str]) -> tuple[str, ...]:
    configured = config.identity.agents.get(agent_id)
    return tuple(dict.fromkeys([*groups, *(configured.groups if configured else ())]))


def agent_of_token(config: BastionConfig, access: BastionAccessToken, transport: TransportInfo) -> Agent:
    return Agent(
        id=access.agent_id,
        groups=_groups(config, access.agent_id, access.groups),
        on_behalf_of=access.on_behalf_of,
        auth_method=access.auth_method,
        client=transport.client,
        subject=access.subject,
        token_id=access.token_id,
        scopes=tuple(access.scopes),
    )


def resolve_agent(config: BastionConfig, transport: TransportInfo, *, tool: str | None = None) -> Agent:
    """The verified identity of the current call (see the module docstring for the order).

    With `tool`, also `require_tool_scopes` for it; the InsufficientScope raised then carries the
    resolved agent (`.agent`) so the refusal can be audited with who was refused. A pipeline that
    sets the agent in one stage and checks scopes in the next gets that for free."""
    agent = _resolve(config, transport)
    if tool is not None:
        require_tool_scopes(config, agent, tool)
    return agent


def _resolve(config: BastionConfig, transport: TransportInfo) -> Agent:
    access = get_access_token()
    if isinstance(access, BastionAccessToken):
        return agent_of_token(config, access, transport)
    if transport.transport in HTTP_TRANSPORTS and http_auth_enabled(config):
        raise AuthenticationError(
            "this call carries no verified identity.", hint="Send Authorization: Bearer <token> with every request."
        )
    if transport.transport == "stdio" and (proven := proven_stdio_agent(config)) is not None:
        return replace(proven, groups=_groups(config, proven.id, proven.groups), client=transport.client)
    agent_id = config.identity.stdio_agent
    return Agent(id=agent_id, groups=_groups(config, agent_id, ()), auth_method="config", client=transport.client)


def require_tool_scopes(config: BastionConfig, agent: Agent, tool: str) -> None:
    """Raise InsufficientScope when `tool` needs a scope (`identity.oauth.tool_scopes`) that the
    agent's token was not granted. Agents named by config carry no token and are not checked;
    API keys hold every scope (verifier.granted_scopes)."""
    oauth = config.identity.oauth
    if oauth is None or agent.auth_method == "config":
        return
    missing = [scope for scope in oauth.tool_scopes.get(tool, ()) if scope not in agent.scopes]
    if missing:
        raise InsufficientScope(tool, missing, agent)
