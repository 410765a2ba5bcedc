"""Static API keys for service agents that have no identity provider.

A key is presented like any other credential, as `Authorization: Bearer <key>`: that is the only
place the MCP authorization spec (and every MCP client's header settings) puts a credential, and it
keeps one authentication path with one refusal log and audit. There is no `X-API-Key` header.

The configuration holds only `sha256:<hex>` of each key (`bastion token hash`). A fast hash is the
right tool here, not a password hash: keys made by `bastion token new` carry 256 random bits (and
`token hash` refuses anything under 32 characters), so a leaked config cannot be brute-forced, and a
deliberately slow hash (scrypt, argon2) would cost tens of milliseconds on every request for no gain.
The lookup hashes the presented key once and compares it with every configured hash using
`hmac.compare_digest`, without stopping at a match, so timing reveals neither which entry matched
nor how much of a hash did.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from server.config import ApiKeyConfig
from server.errors import ConfigError

KEY_PREFIX = "bst_"
MIN_KEY_CHARS = 32
HASH_PREFIX = "sha256:"
_HASH_FORM = re.compile(r"sha256:[0-9a-f]{64}")


def new_key() -> str:
    """A fresh key: `bst_` and 43 base64url characters (256 random bits). The prefix makes a leaked
    key easy to spot for secret scanners and in a code review."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def check_key_text(key: str) -> str:
    """The key as it will be presented, or ValueError saying why it cannot be one."""
    if any(ch.isspace() for ch in key):
        raise ValueError("an API key cannot contain whitespace")
    if len(key) < MIN_KEY_CHARS:
        raise ValueError(f"an API key needs at least {MIN_KEY_CHARS} random characters (use `bastion token new`)")
    if not key.isascii() or not key.isprintable():
        raise ValueError("an API key must be printable ASCII")
    return key


def hash_key(key: str) -> str:
    """The configuration form of a key: `sha256:` and the hex digest of its UTF-8 bytes."""
    return HASH_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKeyMatch:
    agent: str
    groups: tuple[str, ...]
    #: which entry of identity.api_keys matched (its index), for the audit trail
    index: int
    #: the first 12 hex digits of the key's hash: names the key in logs without revealing it
    fingerprint: str
    #: the scopes the key was given (identity.api_keys[i].scopes); None: every scope the server knows
    scopes: tuple[str, ...] | None = None


class ApiKeyTable:
    """The configured keys, checked in constant time."""

    def __init__(self, entries: Iterable[ApiKeyConfig]) -> None:
        self._entries: list[tuple[bytes, ApiKeyConfig]] = []
        for index, entry in enumerate(entries):
            if not _HASH_FORM.fullmatch(entry.hash):
                raise ConfigError(
                    f"identity.api_keys[{index}].hash: expected sha256:<64 lowercase hex digits> "
                    "(the output of `bastion token hash`)"
                )
            if not entry.agent.strip():
                raise ConfigError(f"identity.api_keys[{index}].agent: must name an agent")
            self._entries.append((bytes.fromhex(entry.hash.removeprefix(HASH_PREFIX)), entry))
        digests = [digest for digest, _ in self._entries]
        if len(set(digests)) != len(digests):
            raise ConfigError("identity.api_keys: the same key hash is listed twice")

    def __bool__(self) -> bool:
        return bool(self._entries)

    def match(self, presented: str) -> ApiKeyMatch | None:
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        found: ApiKeyMatch | None = None
        for index, (expected, entry) in enumerate(self._entries):
            if hmac.compare_digest(digest, expected) and found is None:
                found = ApiKeyMatch(entry.agent, tuple(entry.groups), index, expected.hex()[:12], entry.scopes)
        return found
