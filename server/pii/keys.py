"""The mask key: the secret behind the `hash` operator.

`hash` is a keyed HMAC so that a masked value cannot be reversed by hashing a dictionary of likely
emails or phone numbers, and deterministic so that joins, group-bys and distinct counts over masked
columns still work. Determinism across restarts requires the same key every time, so the key comes
from one of two stable places, in this order:

1. the environment variable named by `pii.mask_key_env` (default `BASTION_MASK_KEY`), hex or base64,
   at least 32 bytes: what a deployment with a secret manager uses;
2. otherwise the file named by `pii.mask_key_file` (relative to the config file's folder), which is
   generated once (32 random bytes, hex, mode 0600, created exclusively so two processes starting
   together agree on one key) and read on every later start.

An unusable key is a `ConfigError` at start-up that names where the key came from (the variable's
name, the file's path) and never the key itself. A key file readable by other users is refused, as
ssh refuses a private key: anyone who can read it can un-mask every hashed value by brute force.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from server.config import PiiConfig
from server.errors import ConfigError

MIN_KEY_BYTES = 32
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True)
class MaskKey:
    """The secret, kept out of repr() so that no log line or traceback can print it."""

    secret: bytes = field(repr=False)
    #: where it came from, for messages: "environment variable BASTION_MASK_KEY" or the file's path
    source: str
    #: a public fingerprint of the key (not the key): tells an operator which key produced a hash
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", hashlib.sha256(b"bastion mask key id\x00" + self.secret).hexdigest()[:12])


def decode_key(text: str) -> bytes | None:
    """Hex first (an even number of hex digits), then standard or URL-safe base64; None when the
    text is neither. A 64-digit hex key is also valid base64, which is why hex is tried first."""
    text = text.strip()
    if not text:
        return None
    if len(text) % 2 == 0 and _HEX.fullmatch(text):
        return bytes.fromhex(text)
    standard = text.replace("-", "+").replace("_", "/")
    standard += "=" * (-len(standard) % 4)
    try:
        return base64.b64decode(standard.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None


def load_mask_key(config: PiiConfig, base_dir: str) -> MaskKey:
    """The key for this configuration; raises ConfigError naming the key's source when unusable."""
    name = config.mask_key_env
    value = os.environ.get(name) if name else None
    if value:
        secret = decode_key(value)
        if secret is None or len(secret) < MIN_KEY_BYTES:
            raise ConfigError(
                f"pii.mask_key_env: the environment variable {name} does not hold a usable mask key "
                f"(hex or base64, at least {MIN_KEY_BYTES} bytes)",
                hint="Generate one with: python -c 'import secrets; print(secrets.token_hex(32))'",
            )
        return MaskKey(secret, f"environment variable {name}")
    path = Path(config.mask_key_file)
    if not path.is_absolute():
        path = Path(base_dir) / path
    return MaskKey(_read_or_create(path), str(path))


def _read_or_create(path: Path) -> bytes:
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    secret = os.urandom(MIN_KEY_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use its key
        return _read_key_file(path)
    except OSError as error:
        raise ConfigError(f"pii.mask_key_file: cannot create the mask key file {path}: {error.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(secret.hex() + "\n")
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        raise ConfigError(f"pii.mask_key_file: cannot write the mask key file {path}: {error.strerror}") from None
    return secret


def _read_key_file(path: Path) -> bytes:
    """Raises FileNotFoundError (the caller creates the file) or ConfigError."""
    try:
        info = path.stat()
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else "not a text file"
        raise ConfigError(f"pii.mask_key_file: cannot read the mask key file {path}: {reason}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"pii.mask_key_file: the mask key file {path} is accessible by other users",
            hint=f"Run: chmod 600 {path}",
        )
    secret = decode_key(text)
    if secret is None or len(secret) < MIN_KEY_BYTES:
        raise ConfigError(
            f"pii.mask_key_file: {path} does not hold a usable mask key (hex or base64, at least {MIN_KEY_BYTES} bytes)"
        )
    return secret
