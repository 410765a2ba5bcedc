"""The MCP SDK's `TokenVerifier` for Bastion: API keys, then JWTs, and the identity they prove.

The SDK's bearer middleware calls `verify_token` with whatever follows `Bearer ` and answers 401
when it returns None, 403 when a scope of `AuthSettings.required_scopes` is missing. This verifier
returns a `BastionAccessToken`, the SDK's `AccessToken` carrying the mapped identity, which the
request path reads back with the SDK's `get_access_token()` (resolve.py). So identity rides on the
SDK's own plumbing, including its binding of a streamable-HTTP session to the principal
(client id, issuer, subject) that opened it.

`AccessToken.token` holds a fingerprint (`sha256:` and 16 hex digits), not the token: nothing
downstream needs the token (passing it on to another service is what the MCP spec forbids), and
a token that is not in memory cannot end up in a log line, an error or the database.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from mcp.server.auth.provider import AccessToken

from server.config import IdentityConfig
from server.identity.api_keys import KEY_PREFIX, ApiKeyMatch, ApiKeyTable
from server.identity.claims import safe_claims
from server.identity.oauth import JwtVerifier, TokenRejected, VerifiedToken
from server.identity.refusals import Refusal, RefusalHook, current_box

log = logging.getLogger("bastion.identity")


class BastionAccessToken(AccessToken):
    """An `AccessToken` with the identity Bastion mapped from it (`client_id` is the agent id)."""

    agent_id: str
    groups: tuple[str, ...] = ()
    on_behalf_of: str | None = None
    auth_method: str = "oauth"
    #: the token's `jti`, or the API key's fingerprint
    token_id: str | None = None


def fingerprint(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def granted_scopes(identity: IdentityConfig) -> tuple[str, ...]:
    """Every scope this server knows: required ones first, then per-tool ones."""
    oauth = identity.oauth
    if oauth is None:
        return ()
    scopes = list(oauth.required_scopes)
    for tool_scopes in oauth.tool_scopes.values():
        scopes.extend(tool_scopes)
    return tuple(dict.fromkeys(scopes))


class BastionTokenVerifier:
    """Implements `mcp.server.auth.provider.TokenVerifier`."""

    def __init__(
        self,
        identity: IdentityConfig,
        *,
        jwt_verifier: JwtVerifier | None = None,
        on_refused: RefusalHook | None = None,
    ) -> None:
        self.identity = identity
        self.api_keys = ApiKeyTable(identity.api_keys)
        if jwt_verifier is None and identity.oauth is not None:
            jwt_verifier = JwtVerifier(identity.oauth)
        self.jwt = jwt_verifier
        self.required_scopes: tuple[str, ...] = identity.oauth.required_scopes if identity.oauth else ()
        # A static key is an explicit grant by the operator, with no delegation to narrow: it holds
        # every scope this server knows, and its groups (policy) are what limit it.
        self.api_key_scopes = granted_scopes(identity)
        self.on_refused = on_refused

    async def verify_token(self, token: str) -> AccessToken | None:
        box = current_box.get()
        if box is not None:
            box.verifier_called = True
        try:
            access = await self.authenticate(token.strip())
        except TokenRejected as rejected:
            await self._refuse(Refusal(401, rejected.reason, rejected.method, rejected.claims))
            return None
        except Exception as error:  # fail closed, and say nothing that could echo the token
            log.error("token verification failed unexpectedly: %s", type(error).__name__)
            await self._refuse(Refusal(401, f"internal error while verifying the token ({type(error).__name__})"))
            return None
        missing = [scope for scope in self.required_scopes if scope not in access.scopes]
        if missing:
            # The SDK answers 403 insufficient_scope for this token; record why, with who it was.
            reason = f"insufficient scope: the token lacks {' '.join(missing)}"
            await self._refuse(Refusal(403, reason, access.auth_method, access.claims or {}, access))
        return access

    async def authenticate(self, token: str) -> BastionAccessToken:
        """The identity `token` proves, or TokenRejected with the precise reason."""
        if self.api_keys and (match := self.api_keys.match(token)) is not None:
            return self._from_api_key(match)
        if self.jwt is None or token.startswith(KEY_PREFIX):
            raise TokenRejected("unknown API key", method="api_key")
        return self.access_token(await self.jwt.verify(token), token)

    def access_token(self, verified: VerifiedToken, token: str) -> BastionAccessToken:
        identity = verified.identity
        exp = verified.claims.get("exp")
        assert self.identity.oauth is not None
        skew = self.identity.oauth.clock_skew_s
        return BastionAccessToken(
            token=fingerprint(token),
            client_id=identity.agent_id,
            scopes=list(identity.scopes),
            # the SDK refuses a token past expires_at; include the skew PyJWT already allowed
            expires_at=int(exp) + skew if isinstance(exp, int | float) else None,
            resource=self.identity.oauth.audience,
            subject=identity.subject,
            claims=safe_claims(verified.claims, verified.header),
            agent_id=identity.agent_id,
            groups=identity.groups,
            on_behalf_of=identity.on_behalf_of,
            auth_method="oauth",
            token_id=identity.token_id,
        )

    def _from_api_key(self, match: ApiKeyMatch) -> BastionAccessToken:
        claims: dict[str, Any] = {"api_key": match.index, "key": match.fingerprint}
        return BastionAccessToken(
            token=f"sha256:{match.fingerprint}",
            client_id=match.agent,
            scopes=list(self.api_key_scopes if match.scopes is None else match.scopes),
            claims=claims,
            agent_id=match.agent,
            groups=match.groups,
            auth_method="api_key",
            token_id=f"api_key:{match.fingerprint}",
        )

    async def _refuse(self, refusal: Refusal) -> None:
        box = current_box.get()
        if box is not None:
            box.refusal = refusal  # the guard reports it with the request's details
            return
        if self.on_refused is not None:
            await self.on_refused(refusal, None)
        else:
            log.warning("authentication refused (%d): %s", refusal.status, refusal.reason)
