"""Verified JWT claims to an identity: which claim names the agent, its groups, the human, the scopes.

Identity providers disagree on all four (docs/identity.md has a snippet per provider), so each is a
setting of `identity.oauth`. The mapping fails closed: a groups claim that is present but not a list
of strings or a space-separated string refuses the token rather than dropping groups silently, since
a policy may `forbid` a group and dropping it would lift that restriction. For the same reason an
Entra ID "groups overage" (the groups left out of the token for being too many) refuses the token.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from server.config import OAuthConfig

#: limits on what a token may claim, so that a hostile IdP tenant cannot flood the audit trail
MAX_ID_CHARS = 256
MAX_GROUPS = 1_000
#: claims copied, truncated, into logs and audit events of refused tokens: who it claims to be and
#: which key and times it names; never the signature, never the token
SAFE_CLAIMS = ("iss", "aud", "sub", "azp", "client_id", "cid", "appid", "jti", "exp", "nbf", "iat", "email")
SAFE_HEADER = ("alg", "kid", "typ")
_MAX_SAFE_VALUE_CHARS = 200
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")


class ClaimsRejected(ValueError):
    """The claims are verified but do not describe a usable identity; the message says why."""


@dataclass(frozen=True)
class TokenIdentity:
    """Who a verified token says is calling."""

    agent_id: str
    groups: tuple[str, ...]
    on_behalf_of: str | None
    scopes: tuple[str, ...]
    subject: str | None
    token_id: str | None
    issuer: str | None


def _usable_id(value: Any, claim: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ClaimsRejected(f"claim {claim!r} is missing or empty")
    if len(value) > MAX_ID_CHARS or not _PRINTABLE.fullmatch(value):
        raise ClaimsRejected(f"claim {claim!r} is not a usable identifier (control characters or over {MAX_ID_CHARS})")
    return value


def _words(value: Any, claim: str) -> tuple[str, ...]:
    """A claim that is a list of strings or a space-separated string (both forms occur: Okta's `scp`
    is a list, Entra ID's is a string)."""
    if value is None:
        return ()
    if isinstance(value, str):
        items: Iterable[Any] = value.split()
    elif isinstance(value, list):
        items = value
    else:
        raise ClaimsRejected(f"claim {claim!r} is neither a list of strings nor a space-separated string")
    words: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ClaimsRejected(f"claim {claim!r} holds a {type(item).__name__}, not only strings")
        if item:
            words.append(item)
    if len(words) > MAX_GROUPS:
        raise ClaimsRejected(f"claim {claim!r} has {len(words)} entries (at most {MAX_GROUPS})")
    return tuple(dict.fromkeys(words))


def groups_of(claims: Mapping[str, Any], oauth: OAuthConfig) -> tuple[str, ...]:
    """The groups claim, keeping only names with `groups_prefix` (the prefix stripped) when set."""
    name = oauth.groups_claim
    names_field = claims.get("_claim_names")
    if name not in claims and isinstance(names_field, Mapping) and name in names_field:
        raise ClaimsRejected(
            f"the IdP left claim {name!r} out (groups overage: too many groups); emit a filtered "
            "groups claim or app roles instead"
        )
    groups = _words(claims.get(name), name)
    for group in groups:
        if len(group) > MAX_ID_CHARS or not _PRINTABLE.fullmatch(group):
            raise ClaimsRejected(f"claim {name!r} holds a group name that is not usable")
    prefix = oauth.groups_prefix
    if prefix:
        groups = tuple(g[len(prefix) :] for g in groups if g.startswith(prefix) and len(g) > len(prefix))
    return groups


def scopes_of(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """OAuth scopes from `scope` (RFC 8693/9068: a space-separated string) and `scp` (Okta: a list;
    Entra ID: a space-separated string); both are read when both are present."""
    return tuple(dict.fromkeys(_words(claims.get("scope"), "scope") + _words(claims.get("scp"), "scp")))


def identity_of(claims: Mapping[str, Any], oauth: OAuthConfig) -> TokenIdentity:
    """The identity verified claims describe; raises ClaimsRejected with the precise reason."""
    agent_id = _usable_id(claims.get(oauth.agent_claim), oauth.agent_claim)
    on_behalf_of: str | None = None
    user = claims.get(oauth.user_claim)
    if user is not None:
        on_behalf_of = _usable_id(user, oauth.user_claim)
        # A client-credentials token has no human: its `sub` names the client itself (Auth0 spells
        # it "<client id>@clients"). Recording the client as the human would mislead an auditor.
        if on_behalf_of in (agent_id, f"{agent_id}@clients"):
            on_behalf_of = None
    subject = claims.get("sub")
    token_id = claims.get("jti")
    issuer = claims.get("iss")
    return TokenIdentity(
        agent_id=agent_id,
        groups=groups_of(claims, oauth),
        on_behalf_of=on_behalf_of,
        scopes=scopes_of(claims),
        subject=subject[:MAX_ID_CHARS] if isinstance(subject, str) else None,
        token_id=token_id[:MAX_ID_CHARS] if isinstance(token_id, str) else None,
        issuer=issuer if isinstance(issuer, str) else None,
    )


def safe_claims(claims: Mapping[str, Any] | None, header: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A small, truncated copy of the claims and header fields that help an operator tell who tried
    what, for logs and audit events. The token and its signature are never part of it."""
    picked: dict[str, Any] = {}
    for source, keys in ((header, SAFE_HEADER), (claims, SAFE_CLAIMS)):
        if not isinstance(source, Mapping):
            continue
        for key in keys:
            if key not in source:
                continue
            value = source[key]
            if value is None or isinstance(value, bool | int | float):
                picked[key] = value
            elif isinstance(value, list):
                picked[key] = [str(v)[:_MAX_SAFE_VALUE_CHARS] for v in value[:5]]
            else:
                picked[key] = str(value)[:_MAX_SAFE_VALUE_CHARS]
    return picked
