"""Who is calling, and how they proved it (docs/identity.md).

- agent.py      the `Agent` every decision and audit event is about
- resolve.py    `resolve_agent(config, transport)`, `require_tool_scopes(config, agent, tool)`
- http_auth.py  `auth_kwargs` for `MCPServer(...)`, `guard_http_app` for `bastion serve`
- verifier.py   the SDK `TokenVerifier`: API keys, then JWTs; `BastionAccessToken`
- oauth.py      JWT checks (size, alg, key, signature, claims) with precise refusal reasons
- jwks.py       the issuer's keys: cached, rate-limited refresh, bounded fetch
- claims.py     claims to agent, groups, user and scopes, per `identity.oauth`
- api_keys.py   static keys: `sha256:` hashes, constant-time lookup
- stdio.py      `BASTION_AGENT_TOKEN`, verified once at start-up
- refusals.py   one log line and one audit event per refused authentication
"""
