"""What a refused authentication leaves behind: one safe log line and one audit event."""

from __future__ import annotations

import pytest

from server.config import OAuthConfig
from server.errors import ConfigError
from server.identity.oauth import JwtVerifier, TokenRejected
from server.identity.refusals import Refusal, RefusalAuditor, RequestFacts


def test_request_facts_strip_control_characters_the_caller_chose() -> None:
    scope = {
        "method": "POST",
        "path": "/mcp\nauthentication accepted",
        "client": ("10.0.0.1", 5555),
        "headers": [(b"user-agent", b"evil\r\nagent"), (b"mcp-session-id", b"abc")],
    }
    facts = RequestFacts.of(scope)
    assert facts == RequestFacts("POST", "/mcp?authentication accepted", "10.0.0.1", "evil??agent", "abc")


def test_a_rejection_reason_cannot_carry_a_line_break() -> None:
    assert TokenRejected("wrong issuer: 'a\nb'").reason == "wrong issuer: 'a?b'"


def test_a_401_event_keeps_claims_as_unverified_and_names_no_agent() -> None:
    refusal = Refusal(401, "invalid signature", "oauth", {"azp": "admin-bot", "kid": "k1"})
    event = RefusalAuditor(None, "http").event(refusal, RequestFacts("POST", "/mcp", "127.0.0.1", "ua", None))
    assert (event.tool, event.decision) == ("(authentication)", "deny")
    assert (event.agent_id, event.auth_method) == (None, "oauth")
    assert event.arguments["unverified_claims"] == {"azp": "admin-bot", "kid": "k1"}
    assert event.error == "authentication: invalid signature" and event.reasons == ("invalid signature",)


@pytest.mark.parametrize("url", ["http://idp.example.com/keys", "ftp://idp/keys", "keys.json"])
def test_keys_are_fetched_over_https_unless_the_idp_is_on_this_machine(url: str) -> None:
    oauth = OAuthConfig(issuer="https://i/", audience="a", jwks_url=url)
    with pytest.raises(ConfigError, match="jwks_url: must be an https:// URL"):
        JwtVerifier(oauth)
    JwtVerifier(oauth.model_copy(update={"jwks_url": "http://127.0.0.1:8080/keys"}))
