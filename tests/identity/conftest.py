"""Fixtures: a test identity provider with its JWKS served on 127.0.0.1, and OAuth settings for it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from server.config import OAuthConfig
from tests.identity.idp import ISSUER, JwksServer, TestIdP, serve_jwks


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    yield from serve_jwks(TestIdP())


@pytest.fixture
def idp(jwks: JwksServer) -> Iterator[TestIdP]:
    """The module's IdP, with its JWKS endpoint reset to serving rsa-1 and ec-1 after each test."""
    yield jwks.idp
    jwks.idp.state.mode = "ok"
    jwks.idp.state.published = ["rsa-1", "ec-1"]


def oauth_settings(jwks_url: str, audience: str, **overrides: Any) -> dict[str, Any]:
    return {
        "issuer": ISSUER,
        "audience": audience,
        "jwks_url": jwks_url,
        "agent_claim": "azp",
        "groups_claim": "groups",
        "groups_prefix": "bastion-",
        "user_claim": "email",
        "required_scopes": ["bastion:read"],
        "tool_scopes": {"query": ["bastion:query"]},
        "algorithms": ["RS256", "ES256", "PS256"],
        "clock_skew_s": 30,
        "jwks_min_refresh_s": 1,
        **overrides,
    }


def oauth_config(jwks: JwksServer, **overrides: Any) -> OAuthConfig:
    return OAuthConfig.model_validate(oauth_settings(jwks.url, jwks.idp.audience, **overrides))
