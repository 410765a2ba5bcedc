"""Over stdio, an agent may prove who it is: `BASTION_AGENT_TOKEN`, verified once at start-up.

The MCP client that launches `bastion serve` puts a JWT from the IdP (or a static API key) in the
server's environment. It is verified exactly as an HTTP bearer token is (issuer, audience, expiry,
signature, required scopes), before the server answers anything; a refusal stops start-up with one
line. The identity it proves is then fixed for the process, which is the session: nothing a client
sends can change it, and it is not re-checked when the token later expires (the token proves who
started the session, as a login does; its lifetime does not bound the session).

If the configuration also names the agent (`identity.stdio_agent` or `BASTION_AGENT`), the token
must prove that same agent; a mismatch stops start-up rather than guessing which one is meant.
"""

from __future__ import annotations

import logging
import os
import weakref

from server.config import BastionConfig
from server.errors import AuthenticationError
from server.identity.agent import Agent
from server.identity.api_keys import KEY_PREFIX, ApiKeyTable
from server.identity.oauth import JwtVerifier, TokenRejected
from server.identity.verifier import granted_scopes

log = logging.getLogger("bastion.identity")

STDIO_TOKEN_ENV = "BASTION_AGENT_TOKEN"

#: id(config) -> the identity its token proved; the entry goes when the config object does
_proven: dict[int, Agent] = {}


def proven_stdio_agent(config: BastionConfig) -> Agent | None:
    return _proven.get(id(config))


def _remember(config: BastionConfig, agent: Agent) -> None:
    key = id(config)
    if key not in _proven:
        weakref.finalize(config, _proven.pop, key, None)
    _proven[key] = agent


def _refused(reason: str) -> AuthenticationError:
    """The error that stops start-up; `bastion serve` prints it as its one line on stderr, which is
    the refusal's log line (there is no audit trail open yet to record it in)."""
    return AuthenticationError(f"{STDIO_TOKEN_ENV} was refused: {reason}")


def verify_stdio_token(config: BastionConfig) -> Agent | None:
    """Verify `BASTION_AGENT_TOKEN` if set, remember the identity for `config`, and return it."""
    token = os.environ.get(STDIO_TOKEN_ENV, "").strip()
    if not token:
        return None
    identity = config.identity
    api_keys = ApiKeyTable(identity.api_keys)
    match = api_keys.match(token) if api_keys else None
    if match is not None:
        agent = Agent(
            id=match.agent,
            groups=match.groups,
            auth_method="api_key",
            token_id=f"api_key:{match.fingerprint}",
            scopes=granted_scopes(identity),
        )
    elif token.startswith(KEY_PREFIX):
        raise _refused("unknown API key")
    elif identity.oauth is None:
        raise _refused("it is not a configured API key, and identity.oauth is not configured to verify a JWT")
    else:
        try:
            verified = JwtVerifier(identity.oauth).verify_blocking(token)
        except TokenRejected as rejected:
            raise _refused(rejected.reason) from None
        missing = [s for s in identity.oauth.required_scopes if s not in verified.identity.scopes]
        if missing:
            raise _refused(f"insufficient scope: the token lacks {' '.join(missing)}")
        claimed = verified.identity
        agent = Agent(
            id=claimed.agent_id,
            groups=claimed.groups,
            on_behalf_of=claimed.on_behalf_of,
            auth_method="stdio_token",
            subject=claimed.subject,
            token_id=claimed.token_id,
            scopes=claimed.scopes,
        )
    if "stdio_agent" in identity.model_fields_set and identity.stdio_agent != agent.id:
        raise _refused(
            f"it proves agent {agent.id!r}, but the configuration names {identity.stdio_agent!r} "
            "(identity.stdio_agent or BASTION_AGENT); make them agree or remove one"
        )
    _remember(config, agent)
    log.info("stdio agent %r proven by %s (%s)", agent.id, STDIO_TOKEN_ENV, agent.auth_method)
    return agent
