"""The request path's identity: from the SDK's verified token, else the configuration; and the
per-tool scopes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser

from server.config import BastionConfig, parse_config
from server.errors import AuthenticationError
from server.identity.agent import Agent, ClientInfo, TransportInfo
from server.identity.resolve import InsufficientScope, require_tool_scopes, resolve_agent
from server.identity.verifier import BastionAccessToken
from tools.boundary import tool_error

OAUTH = {"issuer": "https://i/", "audience": "https://b/mcp", "jwks_url": "https://i/keys"}


def config(**identity: Any) -> BastionConfig:
    return parse_config({"databases": {"main": {"dsn": "sqlite:///x.db"}}, "identity": identity})


def transport(kind: str) -> TransportInfo:
    return TransportInfo(transport=kind, session_id="s", client=ClientInfo("client", "1"))


@pytest.fixture
def token_in_context() -> Iterator[BastionAccessToken]:
    access = BastionAccessToken(
        token="sha256:0123456789abcdef",
        client_id="analyst-bot",
        scopes=["bastion:read"],
        subject="alice",
        agent_id="analyst-bot",
        groups=("analytics",),
        on_behalf_of="alice@example.com",
        auth_method="oauth",
        token_id="jti-1",
    )
    reset = auth_context_var.set(AuthenticatedUser(access))
    yield access
    auth_context_var.reset(reset)


def test_a_verified_token_is_the_identity(token_in_context: BastionAccessToken) -> None:
    settings = config(oauth={**OAUTH}, agents={"analyst-bot": {"groups": ["reporting", "analytics"]}})
    agent = resolve_agent(settings, transport("http"))
    assert agent == Agent(
        id="analyst-bot",
        groups=("analytics", "reporting"),  # the token's, then the operator's for that agent id
        on_behalf_of="alice@example.com",
        auth_method="oauth",
        client=ClientInfo("client", "1"),
        subject="alice",
        token_id="jti-1",
        scopes=("bastion:read",),
    )


def test_http_with_authentication_configured_but_no_token_fails_closed() -> None:
    for identity in ({"oauth": OAUTH}, {"api_keys": [{"hash": "sha256:" + "0" * 64, "agent": "a"}]}):
        with pytest.raises(AuthenticationError, match="no verified identity"):
            resolve_agent(config(**identity), transport("http"))


def test_without_authentication_configured_the_local_agent_stays() -> None:
    settings = config(stdio_agent="dev-agent", agents={"dev-agent": {"groups": ["dev"]}})
    for kind in ("http", "sse", "stdio", "memory"):
        agent = resolve_agent(settings, transport(kind))
        assert (agent.id, agent.groups, agent.auth_method) == ("dev-agent", ("dev",), "config")


def test_a_tool_scope_missing_from_the_token_is_refused_naming_it(token_in_context: BastionAccessToken) -> None:
    settings = config(oauth={**OAUTH, "tool_scopes": {"query": ["bastion:query"], "describe": ["bastion:read"]}})
    agent = resolve_agent(settings, transport("http"), tool="describe")
    with pytest.raises(InsufficientScope) as refused:
        resolve_agent(settings, transport("http"), tool="query")
    assert refused.value.agent == agent and refused.value.missing == ("bastion:query",)
    text = tool_error(refused.value).content[0].text
    assert text.startswith("Refused: the query tool needs the OAuth scope bastion:query")
    assert "Next: Ask the identity provider for a token with scope bastion:query" in text


def test_agents_without_a_token_and_api_keys_are_not_scope_checked() -> None:
    settings = config(oauth={**OAUTH, "tool_scopes": {"query": ["bastion:query"]}})
    require_tool_scopes(settings, Agent("local"), "query")
    require_tool_scopes(settings, Agent("etl", auth_method="api_key", scopes=("bastion:query",)), "query")
    with pytest.raises(InsufficientScope):
        require_tool_scopes(settings, Agent("desk", auth_method="stdio_token", scopes=()), "query")
