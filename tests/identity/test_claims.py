"""Claims to identity, as each identity provider spells them."""

from __future__ import annotations

from typing import Any

import pytest

from server.config import OAuthConfig
from server.identity.claims import ClaimsRejected, identity_of, safe_claims


def oauth(**settings: Any) -> OAuthConfig:
    return OAuthConfig.model_validate({"issuer": "https://i/", "audience": "a", "jwks_url": "https://i/k", **settings})


def test_okta_cid_and_scp_list() -> None:
    claims = {"cid": "0oa1", "sub": "alice@example.com", "scp": ["bastion:query", "openid"], "groups": ["dba"]}
    identity = identity_of(claims, oauth(agent_claim="cid"))
    assert (identity.agent_id, identity.on_behalf_of, identity.groups) == ("0oa1", "alice@example.com", ("dba",))
    assert identity.scopes == ("bastion:query", "openid")


def test_entra_azp_scp_string_and_roles_as_groups() -> None:
    claims = {"azp": "app-guid", "oid": "u1", "preferred_username": "bob@corp", "scp": "Bastion.Query Other"}
    claims["roles"] = ["Bastion.Analyst"]
    identity = identity_of(claims, oauth(groups_claim="roles", user_claim="preferred_username"))
    assert identity.scopes == ("Bastion.Query", "Other")
    assert identity.groups == ("Bastion.Analyst",)
    assert identity.on_behalf_of == "bob@corp"


def test_auth0_client_credentials_token_has_no_human() -> None:
    claims = {"azp": "abc123", "sub": "abc123@clients", "scope": "bastion:query"}
    assert identity_of(claims, oauth()).on_behalf_of is None


def test_keycloak_space_separated_groups_with_prefix_filter() -> None:
    claims = {"azp": "agent", "sub": "u", "groups": "bastion:analytics other bastion:support bastion:"}
    identity = identity_of(claims, oauth(groups_prefix="bastion:"))
    assert identity.groups == ("analytics", "support")


def test_a_missing_groups_claim_is_no_groups() -> None:
    assert identity_of({"azp": "agent"}, oauth()).groups == ()


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({}, "claim 'azp' is missing"),
        ({"azp": ""}, "claim 'azp' is missing"),
        ({"azp": 42}, "claim 'azp' is missing"),
        ({"azp": "a\nb"}, "not a usable identifier"),
        ({"azp": "x" * 300}, "not a usable identifier"),
        ({"azp": "a", "groups": [1, 2]}, "holds a int"),
        ({"azp": "a", "groups": {"a": 1}}, "neither a list"),
        ({"azp": "a", "groups": ["ok", "bad\x00"]}, "not usable"),
        ({"azp": "a", "groups": ["g"] * 2000}, "at most 1000"),
        ({"azp": "a", "_claim_names": {"groups": "src1"}}, "groups overage"),
        ({"azp": "a", "sub": ["not", "a", "string"]}, "claim 'sub'"),
    ],
)
def test_unusable_claims_refuse_the_token(claims: dict[str, Any], message: str) -> None:
    with pytest.raises(ClaimsRejected, match=message):
        identity_of(claims, oauth())


def test_safe_claims_keep_only_identifying_fields_truncated() -> None:
    claims = {"sub": "s" * 500, "groups": ["secret-group"], "scope": "x", "aud": ["a", "b"], "exp": 1}
    safe = safe_claims(claims, {"alg": "RS256", "kid": "k", "jwk": {"n": "..."}})
    assert safe == {"alg": "RS256", "kid": "k", "sub": "s" * 200, "aud": ["a", "b"], "exp": 1}
