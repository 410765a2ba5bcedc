"""JWT access tokens verified against the issuer's JWKS, with a precise reason for every refusal.

Checks, in this order, cheapest and most dangerous first:
1. size and shape: at most `MAX_TOKEN_BYTES`, three base64url segments, a JOSE header of at most
   `MAX_JOSE_HEADER_CHARS` that is a JSON object;
2. the header's `alg`, before any key is looked up: `none` and the HS* MACs are refused whatever
   the configuration says (an HS256 token "signed" with the issuer's public key is the classic
   algorithm-confusion attack), and anything else must be in `identity.oauth.algorithms`; a `crit`
   header is refused (no extension is understood);
3. the key: from the JWKS by `kid`, of the key type and curve the algorithm needs (jwks.py);
4. the signature, then `iss` (exact match), `aud` (must contain `identity.oauth.audience`), `exp`
   (required), `nbf` and `iat` (when present), with `clock_skew_s` of leeway, all by PyJWT;
5. the claims Bastion maps to an identity (claims.py).

PyJWT (with `cryptography`) is the JOSE library: the MCP SDK already depends on it, it is
maintained, and it verifies a warm-cache RS256 token in well under 0.1 ms. The token itself never
leaves this module: refusals carry a reason and a few safe claims (claims.safe_claims).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import jwt

from server.config import OAuthConfig
from server.errors import ConfigError
from server.identity.claims import ClaimsRejected, TokenIdentity, identity_of, safe_claims
from server.identity.jwks import DEFAULT_TIMEOUT_S, JwksCache, KeyUnavailable, supported_algorithm

#: larger than any real IdP token (Entra ID with 200 groups is ~6 KB), smaller than uvicorn's 16 KB
#: header limit, so an oversized token gets a 401 with a reason rather than a bare 400
MAX_TOKEN_BYTES = 12_288
MAX_JOSE_HEADER_CHARS = 2_048
_JWT_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_ALG_SHAPE = re.compile(r"[A-Za-z0-9+_-]{1,32}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class TokenRejected(Exception):
    """The token does not prove an identity. `reason` is precise, for the log and the audit trail
    (never for the token's bearer to tune an attack against: the 401 body stays generic)."""

    def __init__(self, reason: str, *, claims: dict[str, Any] | None = None, method: str = "oauth") -> None:
        reason = _CONTROL.sub("?", reason)  # parts of it come from the token: no forged log lines
        super().__init__(reason)
        self.reason = reason
        self.claims = claims or {}
        self.method = method


@dataclass(frozen=True)
class VerifiedToken:
    claims: dict[str, Any]
    header: dict[str, Any]
    identity: TokenIdentity


def looks_like_jwt(token: str) -> bool:
    return len(token) <= MAX_TOKEN_BYTES and _JWT_SHAPE.fullmatch(token) is not None


def _b64_json(segment: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise TokenRejected(f"malformed token: the {what} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise TokenRejected(f"malformed token: the {what} is not a JSON object")
    return value


def _unverified_claims(token: str) -> dict[str, Any]:
    """The payload, unverified: only for messages about a token that failed, and for safe_claims."""
    try:
        return _b64_json(token.split(".")[1], "payload")
    except (TokenRejected, IndexError):
        return {}


def _fetchable_safely(url: str) -> bool:
    """Keys fetched over plain HTTP could be swapped by anyone on the path, and with them every
    identity; so https, except for an IdP on this machine (tests, a local sidecar)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return True
    return parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK_HOSTS


def _when(value: Any) -> str:
    try:
        return datetime.fromtimestamp(float(value), UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    except (TypeError, ValueError, OverflowError, OSError):
        return repr(value)[:40]


class JwtVerifier:
    """Verifies access tokens of one issuer (`identity.oauth`)."""

    def __init__(self, oauth: OAuthConfig, jwks: JwksCache | None = None) -> None:
        self.oauth = oauth
        for alg in oauth.algorithms:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ConfigError(f"identity.oauth.algorithms: {alg} is never accepted (only asymmetric signatures)")
            if not supported_algorithm(alg):
                raise ConfigError(f"identity.oauth.algorithms: {alg} is not a supported signature algorithm")
        if not oauth.algorithms:
            raise ConfigError("identity.oauth.algorithms: at least one algorithm is required")
        if not _fetchable_safely(oauth.jwks_url):
            raise ConfigError("identity.oauth.jwks_url: must be an https:// URL (http only on a loopback address)")
        self.algorithms = frozenset(oauth.algorithms)
        timeout = getattr(oauth, "jwks_timeout_s", None) or DEFAULT_TIMEOUT_S
        self.jwks = jwks or JwksCache(
            oauth.jwks_url, cache_s=oauth.jwks_cache_s, min_refresh_s=oauth.jwks_min_refresh_s, timeout_s=timeout
        )
        self._options: Any = {"require": ["exp", "iss", "aud"]}

    # -- the steps --------------------------------------------------------------------------------

    def inspect(self, token: str) -> tuple[dict[str, Any], str, str | None]:
        """Size, shape and header checks; returns (header, alg, kid). No key, no crypto."""
        if not token:
            raise TokenRejected("empty bearer token")
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenRejected(f"token too large: {len(token)} bytes (at most {MAX_TOKEN_BYTES})")
        if _JWT_SHAPE.fullmatch(token) is None:
            raise TokenRejected("malformed token: not a JWT (three base64url segments separated by dots)")
        encoded_header = token.split(".", 1)[0]
        if len(encoded_header) > MAX_JOSE_HEADER_CHARS:
            raise TokenRejected(
                f"JOSE header too large: {len(encoded_header)} characters (at most {MAX_JOSE_HEADER_CHARS})"
            )
        header = _b64_json(encoded_header, "JOSE header")

        def refuse(reason: str) -> TokenRejected:
            return TokenRejected(reason, claims=safe_claims(_unverified_claims(token), header))

        alg = header.get("alg")
        if not isinstance(alg, str) or not _ALG_SHAPE.fullmatch(alg):
            raise refuse("malformed token: the JOSE header has no usable alg")
        if alg.lower() == "none":
            raise refuse("algorithm 'none' (an unsigned token) is never accepted")
        if alg.upper().startswith("HS"):
            raise refuse(f"algorithm {alg} (a shared-secret MAC) is never accepted")
        if alg not in self.algorithms:
            allowed = ", ".join(sorted(self.algorithms))
            raise refuse(f"algorithm {alg} is not allowed (identity.oauth.algorithms: {allowed})")
        if "crit" in header:
            raise refuse("the JOSE header has a 'crit' parameter, and no extension is supported")
        kid = header.get("kid")
        if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
            raise refuse("malformed token: kid is not a short string")
        return header, alg, kid

    async def verify(self, token: str) -> VerifiedToken:
        header, alg, kid = self.inspect(token)
        try:
            key = await self.jwks.key_for(kid, alg)
        except KeyUnavailable as error:
            raise TokenRejected(str(error), claims=safe_claims(_unverified_claims(token), header)) from None
        return self._check(token, header, alg, key)

    def verify_blocking(self, token: str) -> VerifiedToken:
        """`verify` for start-up (BASTION_AGENT_TOKEN), when no request is being served yet."""
        header, alg, kid = self.inspect(token)
        try:
            key = self.jwks.key_for_blocking(kid, alg)
        except KeyUnavailable as error:
            raise TokenRejected(str(error), claims=safe_claims(_unverified_claims(token), header)) from None
        return self._check(token, header, alg, key)

    def _check(self, token: str, header: dict[str, Any], alg: str, key: Any) -> VerifiedToken:
        oauth = self.oauth
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=oauth.audience,
                issuer=oauth.issuer,
                leeway=oauth.clock_skew_s,
                options=self._options,
            )
        except jwt.PyJWTError as error:
            unverified = _unverified_claims(token)
            raise TokenRejected(self._reason(error, unverified), claims=safe_claims(unverified, header)) from None
        try:
            identity = identity_of(claims, oauth)
        except ClaimsRejected as error:
            raise TokenRejected(f"unusable claims: {error}", claims=safe_claims(claims, header)) from None
        return VerifiedToken(claims=claims, header=header, identity=identity)

    def _reason(self, error: jwt.PyJWTError, claims: dict[str, Any]) -> str:
        """PyJWT's exception as a sentence an operator can act on. Signature errors come first in
        PyJWT, so by the time a claim is blamed the claims shown are the verified ones."""
        skew = self.oauth.clock_skew_s
        now = time.time()
        if isinstance(error, jwt.ExpiredSignatureError):
            exp = claims.get("exp")
            ago = f"{int(now - float(exp))} s ago " if isinstance(exp, int | float) else ""
            return f"token expired {ago}(exp {_when(exp)}; clock skew allowance {skew} s)"
        if isinstance(error, jwt.ImmatureSignatureError):
            claim = "iat" if "(iat)" in str(error) else "nbf"
            value = claims.get(claim)
            ahead = f" {int(float(value) - now)} s in the future" if isinstance(value, int | float) else ""
            label = "issued in the future" if claim == "iat" else "not yet valid"
            return f"token {label}: {claim} {_when(value)}{ahead} (clock skew allowance {skew} s)"
        if isinstance(error, jwt.InvalidIssuerError):
            return f"wrong issuer: {str(claims.get('iss'))[:200]!r} (expected {self.oauth.issuer!r})"
        if isinstance(error, jwt.InvalidAudienceError):
            return f"wrong audience: {str(claims.get('aud'))[:200]!r} (expected {self.oauth.audience!r})"
        if isinstance(error, jwt.MissingRequiredClaimError):
            return f"missing claim: {error.claim}"
        if isinstance(error, jwt.InvalidSignatureError):
            return "invalid signature"
        if isinstance(error, jwt.InvalidAlgorithmError):
            return f"algorithm refused: {error}"
        if isinstance(error, jwt.InvalidKeyError):
            return f"unusable key: {error}"
        if isinstance(error, jwt.DecodeError):
            return f"malformed token: {error}"
        return f"invalid token: {type(error).__name__}: {error}"[:300]
