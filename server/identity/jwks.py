"""The issuer's signing keys (JWKS), fetched over HTTP and cached.

Rules, each for a reason:
- Keys are cached for `jwks_cache_s`; a token naming an unknown `kid` triggers a refresh (the IdP
  rotated its keys), but at most one fetch attempt per `jwks_min_refresh_s`, so a flood of tokens
  with made-up key ids cannot turn Bastion into a load generator against the IdP.
- One fetch at a time; callers that need it wait for that one fetch, bounded by a short timeout.
  A caller whose key is already cached never waits, so a slow or down JWKS endpoint delays only the
  requests that could not be verified anyway.
- If a refresh fails, the keys from the last good fetch stay usable until they are twice
  `jwks_cache_s` old (an IdP outage should not lock every agent out at once); a key the IdP
  removed disappears with the first refresh that succeeds.
- A key is used only with the algorithm family its type supports (RSA for RS/PS, EC with the
  matching curve for ES, OKP for EdDSA), and only for signatures; a JWK that names its own `alg`
  is used with that algorithm only. Keys are never taken from the token (`jku`, `x5u`, `jwk`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import jwt

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 3.0
MAX_JWKS_BYTES = 1_000_000
#: after a failed fetch, the next attempt waits at least this long even if min_refresh_s is 0
MIN_RETRY_AFTER_FAILURE_S = 1.0

#: algorithm -> (key type, curves it may use; empty: any)
_KEY_TYPE_OF_ALG: dict[str, tuple[str, frozenset[str]]] = {
    **{alg: ("RSA", frozenset()) for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")},
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "ES256K": ("EC", frozenset({"secp256k1"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
    "Ed25519": ("OKP", frozenset({"Ed25519"})),
}


class KeyUnavailable(Exception):
    """No key can verify this token; the message is the precise reason for the log and audit."""


def supported_algorithm(alg: str) -> bool:
    return alg in _KEY_TYPE_OF_ALG


@dataclass
class _KeySet:
    by_kid: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    without_kid: list[Mapping[str, Any]] = field(default_factory=list)
    fetched_at: float = 0.0  # time.monotonic()


def parse_jwks(document: Any) -> _KeySet:
    """The signature keys of a JWKS document (RFC 7517), indexed by `kid`."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWKS document (no 'keys' list)")
    keys = _KeySet()
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kty"), str):
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        ops = jwk.get("key_ops")
        if isinstance(ops, list) and "verify" not in ops:
            continue
        if any(private in jwk for private in ("d", "p", "q", "k")):
            # a private or symmetric key published by mistake: never use it
            continue
        kid = jwk.get("kid")
        if isinstance(kid, str):
            keys.by_kid.setdefault(kid, jwk)
        else:
            keys.without_kid.append(jwk)
    return keys


def _check_key_fits(jwk: Mapping[str, Any], alg: str, kid: str | None) -> None:
    name = f"key {kid!r}" if kid else "the issuer's key"
    expected_kty, curves = _KEY_TYPE_OF_ALG[alg]
    if jwk.get("kty") != expected_kty:
        raise KeyUnavailable(f"key type mismatch: {name} is {jwk.get('kty')}, but the token says {alg}")
    if curves and jwk.get("crv") not in curves:
        raise KeyUnavailable(f"key curve mismatch: {name} is on {jwk.get('crv')}, but the token says {alg}")
    stated = jwk.get("alg")
    if isinstance(stated, str) and stated != alg:
        raise KeyUnavailable(f"algorithm mismatch: {name} is for {stated}, but the token says {alg}")


class JwksCache:
    """Signing keys of one issuer. Safe to share between concurrent requests of one event loop."""

    def __init__(
        self,
        url: str,
        *,
        cache_s: float,
        min_refresh_s: float,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.cache_s = cache_s
        self.min_refresh_s = min_refresh_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._keys: _KeySet | None = None
        #: (kid, alg) -> key object ready for PyJWT; rebuilt per key set
        self._prepared: dict[tuple[str | None, str], Any] = {}
        self._attempted_at: float | None = None
        self._last_error: str | None = None
        self._generation = 0
        self._lock = anyio.Lock()
        self.fetches = 0  # for tests and the benchmark

    # -- lookup ---------------------------------------------------------------------------------

    async def key_for(self, kid: str | None, alg: str) -> Any:
        """The key that verifies a token with this header, fetching the JWKS when it is missing,
        expired, or lacks `kid`. Raises KeyUnavailable with the precise reason."""
        now = self._clock()
        keys = self._keys
        if keys is not None and now - keys.fetched_at < self.cache_s:
            key = self._lookup(keys, kid, alg)
            if key is not None:
                return key
            if not self._may_attempt(now):
                raise KeyUnavailable(self._unknown_kid_reason(kid, now))
        await self._refresh()
        return self._lookup_after_refresh(kid, alg)

    def key_for_blocking(self, kid: str | None, alg: str) -> Any:
        """`key_for` for start-up, before any event loop serves requests (BASTION_AGENT_TOKEN)."""
        if self._keys is None or self._lookup(self._keys, kid, alg) is None:
            self._attempted_at = self._clock()
            try:
                self._install(self._fetch_blocking())
            except KeyUnavailable as error:
                self._last_error = str(error)
        return self._lookup_after_refresh(kid, alg)

    def _lookup_after_refresh(self, kid: str | None, alg: str) -> Any:
        now = self._clock()
        keys = self._keys
        if keys is None:
            raise KeyUnavailable(f"JWKS unavailable: {self._last_error or 'never fetched'}")
        if now - keys.fetched_at >= 2 * self.cache_s:
            raise KeyUnavailable(
                f"JWKS unavailable: {self._last_error or 'refresh failed'}; cached keys are "
                f"{now - keys.fetched_at:.0f} s old (used for at most {2 * self.cache_s:.0f} s)"
            )
        key = self._lookup(keys, kid, alg)
        if key is None:
            raise KeyUnavailable(self._unknown_kid_reason(kid, now))
        return key

    def _lookup(self, keys: _KeySet, kid: str | None, alg: str) -> Any:
        """The prepared key, None when the set has no key for `kid`; KeyUnavailable when it has one
        that does not fit `alg`."""
        cached = self._prepared.get((kid, alg))
        if cached is not None:
            return cached
        if kid is not None:
            jwk = keys.by_kid.get(kid)
        else:
            # No kid: acceptable only when exactly one key could verify this algorithm.
            family = _KEY_TYPE_OF_ALG[alg][0]
            candidates = [k for k in [*keys.by_kid.values(), *keys.without_kid] if k.get("kty") == family]
            if len(candidates) > 1:
                count = len(candidates)
                raise KeyUnavailable(f"the token names no key (no kid), and the JWKS has {count} {family} keys")
            jwk = candidates[0] if candidates else None
        if jwk is None:
            return None
        _check_key_fits(jwk, alg, kid)
        try:
            prepared = jwt.PyJWK(dict(jwk), algorithm=alg).key
        except jwt.PyJWTError as error:
            raise KeyUnavailable(f"key {kid!r} in the JWKS is unusable: {error}") from None
        self._prepared[(kid, alg)] = prepared
        return prepared

    def _unknown_kid_reason(self, kid: str | None, now: float) -> str:
        age = "never" if self._attempted_at is None else f"{now - self._attempted_at:.0f} s ago"
        reason = f"unknown signing key: kid {kid!r} is not in the issuer's JWKS (last fetched {age})"
        if self._last_error:
            reason += f"; last fetch failed: {self._last_error}"
        return reason

    def _may_attempt(self, now: float) -> bool:
        if self._attempted_at is None:
            return True
        wait = self.min_refresh_s
        if self._last_error:
            wait = max(wait, MIN_RETRY_AFTER_FAILURE_S)
        return now - self._attempted_at >= wait

    # -- fetching -------------------------------------------------------------------------------

    async def _refresh(self) -> None:
        """Fetch once for everyone waiting; a caller that queued behind a fetch reuses its outcome."""
        seen = self._generation
        async with self._lock:
            if self._generation != seen or not self._may_attempt(self._clock()):
                return
            self._attempted_at = self._clock()
            try:
                with anyio.fail_after(self.timeout_s):
                    document = await self._fetch()
                self._install(document)
            except TimeoutError:
                self._failed(f"no answer from {self.url} within {self.timeout_s:g} s")
            except KeyUnavailable as error:
                self._failed(str(error))
            finally:
                self._generation += 1

    def _failed(self, reason: str) -> None:
        self._last_error = reason
        log.warning("JWKS fetch failed: %s", reason)

    def _install(self, document: Any) -> None:
        try:
            keys = parse_jwks(document)
        except ValueError as error:
            raise KeyUnavailable(f"{self.url} returned {error}") from None
        keys.fetched_at = self._clock()
        self._keys = keys
        self._prepared = {}
        self._last_error = None
        self.fetches += 1

    async def _fetch(self) -> Any:
        timeout = httpx2.Timeout(self.timeout_s)
        try:
            async with (
                httpx2.AsyncClient(timeout=timeout, follow_redirects=False) as client,
                client.stream("GET", self.url, headers={"accept": "application/json"}) as response,
            ):
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise KeyUnavailable(f"{self.url} returned more than {MAX_JWKS_BYTES} bytes")
                return self._decode(response.status_code, bytes(body))
        except httpx2.HTTPError as error:
            raise KeyUnavailable(f"cannot fetch {self.url}: {type(error).__name__}: {error}"[:300]) from None

    def _fetch_blocking(self) -> Any:
        try:
            with httpx2.Client(timeout=httpx2.Timeout(self.timeout_s), follow_redirects=False) as client:
                response = client.get(self.url, headers={"accept": "application/json"})
        except httpx2.HTTPError as error:
            raise KeyUnavailable(f"cannot fetch {self.url}: {type(error).__name__}: {error}"[:300]) from None
        if len(response.content) > MAX_JWKS_BYTES:
            raise KeyUnavailable(f"{self.url} returned more than {MAX_JWKS_BYTES} bytes")
        return self._decode(response.status_code, response.content)

    def _decode(self, status: int, body: bytes) -> Any:
        if status != 200:
            raise KeyUnavailable(f"{self.url} answered HTTP {status}")
        try:
            return json.loads(body)
        except ValueError:
            raise KeyUnavailable(f"{self.url} did not return JSON") from None
