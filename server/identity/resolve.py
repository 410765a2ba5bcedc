"""Turn what the transport knows into an `Agent`."""

from __future__ import annotations

from server.config import BastionConfig
from server.identity.agent import Agent, TransportInfo


def resolve_agent(config: BastionConfig, transport: TransportInfo) -> Agent:
    """The configured local agent, with its groups from `identity.agents`.

    Over HTTP without OAuth configured the same local identity applies; that mode is for local
    development and binds to loopback by default.
    """
    agent_id = config.identity.stdio_agent
    configured = config.identity.agents.get(agent_id)
    return Agent(
        id=agent_id,
        groups=configured.groups if configured else (),
        auth_method="config",
        client=transport.client,
    )
