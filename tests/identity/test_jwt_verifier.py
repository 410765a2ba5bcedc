"""JWT verification against a real JWKS served over HTTP: good tokens, a table of bad ones, and
the JWKS endpoint rotating, failing, hanging and serving garbage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from server.errors import ConfigError
from server.identity.jwks import JwksCache
from server.identity.oauth import JwtVerifier, TokenRejected
from tests.identity.conftest import oauth_config
from tests.identity.idp import JwksServer, TestIdP, b64_json


def verifier(jwks: JwksServer, *, timeout_s: float = 3.0, **overrides: object) -> JwtVerifier:
    oauth = oauth_config(jwks, **overrides)
    cache = JwksCache(
        oauth.jwks_url, cache_s=oauth.jwks_cache_s, min_refresh_s=oauth.jwks_min_refresh_s, timeout_s=timeout_s
    )
    return JwtVerifier(oauth, cache)


async def rejection(check: JwtVerifier, token: str) -> TokenRejected:
    with pytest.raises(TokenRejected) as caught:
        await check.verify(token)
    return caught.value


async def test_rsa_and_ec_tokens_map_to_agent_groups_user_and_scopes(jwks: JwksServer, idp: TestIdP) -> None:
    check = verifier(jwks)
    for key in ("rsa-1", "ec-1"):
        verified = await check.verify(idp.token(key=key, jti="j-1"))
        identity = verified.identity
        assert identity.agent_id == "analyst-bot"
        assert identity.groups == ("analytics",)  # prefix "bastion-" kept and stripped; others dropped
        assert identity.on_behalf_of == "alice@example.com"
        assert identity.scopes == ("bastion:read", "bastion:query")
        assert (identity.subject, identity.token_id, identity.issuer) == (
            "alice@example.com",
            "j-1",
            "https://idp.test/",
        )


async def test_the_jwks_is_fetched_once_and_cached(jwks: JwksServer, idp: TestIdP) -> None:
    check = verifier(jwks)
    await asyncio.gather(*(check.verify(idp.token()) for _ in range(50)))
    assert check.jwks.fetches == 1


def _now() -> int:
    return int(time.time())


BAD_TOKENS: list[tuple[str, Callable[[TestIdP], str], str]] = [
    ("empty", lambda idp: "", "empty bearer token"),
    ("not a JWT", lambda idp: "not-a-jwt", "not a JWT"),
    ("garbage segments", lambda idp: "abc.def.ghi", "not base64url-encoded JSON"),
    ("expired", lambda idp: idp.token(exp=_now() - 3600, iat=_now() - 4000), "token expired 36"),
    ("not yet valid", lambda idp: idp.token(nbf=_now() + 3600), "token not yet valid: nbf"),
    ("issued in the future", lambda idp: idp.token(iat=_now() + 3600), "token issued in the future: iat"),
    ("wrong issuer", lambda idp: idp.token(iss="https://evil.test/"), "wrong issuer: 'https://evil.test/'"),
    ("wrong audience", lambda idp: idp.token(aud="https://other.test/"), "wrong audience: 'https://other.test/'"),
    ("no exp", lambda idp: idp.token(exp=None), "missing claim: exp"),
    ("no audience", lambda idp: idp.token(aud=None), "missing claim: aud"),
    ("HS256 keyed with the public key", lambda idp: idp.hs256_with_public_key(), "HS256 (a shared-secret MAC)"),
    ("alg none", lambda idp: idp.unsigned(), "algorithm 'none'"),
    ("alg outside the allow-list", lambda idp: idp.token(alg="RS512"), "algorithm RS512 is not allowed"),
    ("alg with a newline", lambda idp: idp.with_header({"alg": "RS256\nforged", "kid": "rsa-1"}), "no usable alg"),
    ("unknown kid", lambda idp: idp.token(key="rsa-2"), "unknown signing key: kid 'rsa-2'"),
    ("EC token naming an RSA key", lambda idp: idp.token(key="ec-1", headers={"kid": "rsa-1"}), "key type mismatch"),
    ("PS256 with an RS256 key", lambda idp: idp.token(alg="PS256"), "algorithm mismatch: key 'rsa-1' is for RS256"),
    ("tampered signature", lambda idp: idp.tampered(), "invalid signature"),
    ("huge JOSE header", lambda idp: idp.huge_header(), "JOSE header too large"),
    ("huge token", lambda idp: idp.token(padding="x" * 13_000), "token too large"),
    ("crit header", lambda idp: idp.token(headers={"crit": ["exp"]}), "'crit'"),
    ("no agent claim", lambda idp: idp.token(azp=None), "claim 'azp' is missing"),
    ("malformed groups", lambda idp: idp.token(groups={"admin": True}), "claim 'groups' is neither"),
    (
        "groups overage",
        lambda idp: idp.token(groups=None, _claim_names={"groups": "src1"}),
        "groups overage",
    ),
    ("header not JSON", lambda idp: f"{b64_json([1])}.{b64_json({})}.sig", "JOSE header is not a JSON object"),
]


@pytest.mark.parametrize(("case", "make", "reason"), BAD_TOKENS, ids=[case for case, _, _ in BAD_TOKENS])
async def test_a_bad_token_is_refused_with_a_precise_reason(
    jwks: JwksServer, idp: TestIdP, case: str, make: Callable[[TestIdP], str], reason: str
) -> None:
    token = make(idp)
    refused = await rejection(verifier(jwks), token)
    assert reason in refused.reason, refused.reason
    if token:
        assert token not in refused.reason and token not in repr(refused.claims)


async def test_refusals_carry_safe_claims_for_the_log(jwks: JwksServer, idp: TestIdP) -> None:
    refused = await rejection(verifier(jwks), idp.token(iss="https://evil.test/", jti="abc"))
    assert refused.claims["iss"] == "https://evil.test/"
    assert refused.claims["jti"] == "abc"
    assert refused.claims["kid"] == "rsa-1"
    assert "groups" not in refused.claims and "scope" not in refused.claims


async def test_clock_skew_is_allowed(jwks: JwksServer, idp: TestIdP) -> None:
    check = verifier(jwks, clock_skew_s=30)
    await check.verify(idp.token(exp=_now() - 10, iat=_now() - 100, nbf=_now() + 10))


async def test_hs_and_none_cannot_be_configured() -> None:
    for alg in ("HS256", "none"):
        with pytest.raises(ConfigError, match=f"{alg} is never accepted"):
            JwtVerifier(oauth_config(JwksServer(TestIdP(), "http://127.0.0.1:9/keys"), algorithms=[alg]))


async def test_an_unknown_kid_refreshes_the_jwks_at_most_once_per_interval(jwks: JwksServer, idp: TestIdP) -> None:
    check = verifier(jwks, jwks_min_refresh_s=1)
    await check.verify(idp.token())
    hits = idp.state.hits
    for _ in range(20):
        await rejection(check, idp.token(key="rsa-2"))
    assert idp.state.hits - hits <= 1  # the first may refresh (if a second has passed); the rest do not
    idp.state.published = ["rsa-1", "ec-1", "rsa-2"]  # the IdP rotates a key in
    await asyncio.sleep(1.1)
    verified = await check.verify(idp.token(key="rsa-2"))
    assert verified.identity.agent_id == "analyst-bot"
    assert check.jwks.fetches == 2


async def test_a_down_jwks_endpoint_refuses_with_its_status(jwks: JwksServer, idp: TestIdP) -> None:
    idp.state.mode = "down"
    refused = await rejection(verifier(jwks), idp.token())
    assert "JWKS unavailable" in refused.reason and "answered HTTP 503" in refused.reason


async def test_an_unreachable_jwks_endpoint_refuses(idp: TestIdP) -> None:
    check = verifier(JwksServer(idp, "http://127.0.0.1:9/keys"))
    refused = await rejection(check, idp.token())
    assert "cannot fetch http://127.0.0.1:9/keys" in refused.reason


async def test_a_jwks_endpoint_serving_garbage_refuses(jwks: JwksServer, idp: TestIdP) -> None:
    idp.state.mode = "garbage"
    refused = await rejection(verifier(jwks), idp.token())
    assert "did not return JSON" in refused.reason


async def test_a_slow_jwks_endpoint_is_bounded_by_the_timeout(jwks: JwksServer, idp: TestIdP) -> None:
    idp.state.mode, idp.state.delay_s = "slow", 3.0
    started = time.perf_counter()
    refused = await rejection(verifier(jwks, timeout_s=0.5), idp.token())
    assert time.perf_counter() - started < 1.5
    assert "no answer from" in refused.reason and "within 0.5 s" in refused.reason


async def test_a_slow_refresh_does_not_hold_up_tokens_whose_key_is_cached(jwks: JwksServer, idp: TestIdP) -> None:
    check = verifier(jwks, timeout_s=1.0, jwks_min_refresh_s=0)
    await check.verify(idp.token())  # warm: rsa-1 cached
    idp.state.mode, idp.state.delay_s = "slow", 3.0

    async def timed(token: str) -> tuple[float, str]:
        started = time.perf_counter()
        try:
            await check.verify(token)
            outcome = "ok"
        except TokenRejected as refused:
            outcome = refused.reason
        return time.perf_counter() - started, outcome

    refreshing = asyncio.create_task(timed(idp.token(key="rsa-2")))  # unknown kid: refresh, which hangs
    await asyncio.sleep(0.05)
    quick = await asyncio.gather(*(timed(idp.token()) for _ in range(10)))
    assert all(outcome == "ok" and elapsed < 0.2 for elapsed, outcome in quick), quick
    elapsed, outcome = await refreshing
    assert 0.9 < elapsed < 2.0 and "no answer from" in outcome


async def test_cached_keys_outlive_a_failed_refresh_for_one_more_cache_period(jwks: JwksServer, idp: TestIdP) -> None:
    now = [1000.0]
    oauth = oauth_config(jwks, jwks_cache_s=60)
    cache = JwksCache(oauth.jwks_url, cache_s=60, min_refresh_s=1, timeout_s=1.0, clock=lambda: now[0])
    check = JwtVerifier(oauth, cache)
    await check.verify(idp.token())
    idp.state.mode = "down"
    now[0] += 90  # expired, refresh fails: the last good keys still verify
    await check.verify(idp.token())
    now[0] += 40  # 130 s: past twice the cache period
    refused = await rejection(check, idp.token())
    assert "cached keys are 130 s old" in refused.reason and "answered HTTP 503" in refused.reason


async def test_a_jwk_with_a_private_part_or_another_use_is_ignored(jwks: JwksServer, idp: TestIdP) -> None:
    from server.identity.jwks import parse_jwks

    public = idp.keys["rsa-1"].public_jwk()
    encryption, private = {**public, "kid": "enc", "use": "enc"}, {**public, "d": "xx"}
    keys = parse_jwks({"keys": [encryption, private, {"kty": "oct", "k": "x"}]})
    assert keys.by_kid == {} and keys.without_kid == []
