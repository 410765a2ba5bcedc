"""Checkpoints: a point of the chain written into the chain, optionally signed with a key.

The hash chain shows any edit to the trail unless the editor rewrites everything after the edit,
recomputing each hash, which anyone who can write to the store and read this code can do. A signed
checkpoint closes that gap: it records one event's sequence and hash with an HMAC-SHA256 made with a
key the store never sees (`BASTION_AUDIT_KEY` in the environment of the server and of `bastion
audit`). A rewritten tail then no longer matches the checkpoints after the edit, and forging a new
checkpoint needs the key.

A checkpoint is itself an audit event (tool `(audit checkpoint)`, decision `checkpoint`), appended to
the chain like any other, so deleting or editing one breaks the chain too and no new table is needed.
Its arguments carry what it vouches for::

    {"sequence": 41, "hash": "<64 hex>", "reason": "checkpoint" | "prune",
     "signature": "<64 hex>" | null, "key_id": "<16 hex>" | null, "pruned_before": "<ISO time>"?}

A checkpoint written by `prune` is also where verification starts once the events up to `sequence`
are deleted (see server/audit/retention.py).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from server.audit.chain import ChainHead
from server.audit.event import AuditEvent, StoredEvent
from server.errors import ConfigError

CHECKPOINT_TOOL = "(audit checkpoint)"
CHECKPOINT_DECISION = "checkpoint"
KEY_ENV = "BASTION_AUDIT_KEY"
MIN_KEY_LENGTH = 32
_DOMAIN = b"bastion-audit-checkpoint/v1\n"


@dataclass(frozen=True)
class AuditKey:
    """The signing key and its public id (a hash of it), so verify can tell "signed with another key"
    from "forged"."""

    secret: bytes
    key_id: str

    @classmethod
    def from_text(cls, text: str) -> AuditKey:
        if len(text) < MIN_KEY_LENGTH:
            raise ConfigError(
                f"{KEY_ENV} must be at least {MIN_KEY_LENGTH} characters (for example the output of "
                "`openssl rand -hex 32`)"
            )
        secret = text.encode("utf-8")
        return cls(secret, hashlib.sha256(b"bastion-audit-key-id\n" + secret).hexdigest()[:16])

    def sign(self, sequence: int, hash_: str) -> str:
        message = _DOMAIN + f"{sequence}:{hash_}".encode("ascii")
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:  # never print the secret, even in a traceback's locals
        return f"AuditKey(key_id={self.key_id!r})"


def audit_key_from_env(environ: Mapping[str, str] | None = None) -> AuditKey | None:
    """The key in BASTION_AUDIT_KEY, or None when it is unset or empty (checkpoints are then written
    unsigned: they still anchor a pruned trail but do not prove a tail was not rewritten)."""
    text = (environ if environ is not None else os.environ).get(KEY_ENV, "")
    return AuditKey.from_text(text) if text else None


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint event vouches for, read back from its arguments."""

    #: where the checkpoint event itself sits in the chain
    at_sequence: int
    time: datetime
    sequence: int
    hash: str
    reason: str
    signature: str | None
    key_id: str | None
    pruned_before: str | None = None

    @property
    def link(self) -> ChainHead:
        return ChainHead(self.sequence, self.hash)

    def check_signature(self, key: AuditKey | None) -> str | None:
        """None when the signature holds; otherwise why not, in words for the verify report. Only a
        signature made with this very key that does not match is forgery; the others are "cannot tell"."""
        if self.signature is None:
            return "unsigned"
        if key is None:
            return f"signed (key id {self.key_id}) but {KEY_ENV} is not set, so the signature was not checked"
        if self.key_id != key.key_id:
            return f"signed with another key (key id {self.key_id}; {KEY_ENV} has key id {key.key_id})"
        if not hmac.compare_digest(self.signature, key.sign(self.sequence, self.hash)):
            return "forged"
        return None


def checkpoint_event(
    link: ChainHead,
    key: AuditKey | None,
    *,
    reason: str = "checkpoint",
    actor: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """The event that records `link` (an event's sequence and hash), signed when there is a key."""
    arguments: dict[str, Any] = {
        "sequence": link.sequence,
        "hash": link.hash,
        "reason": reason,
        "signature": key.sign(link.sequence, link.hash) if key else None,
        "key_id": key.key_id if key else None,
        **(extra or {}),
    }
    what = "signed" if key else "unsigned"
    return AuditEvent(
        id=str(uuid.uuid4()),
        time=datetime.now(UTC),
        tool=CHECKPOINT_TOOL,
        decision=CHECKPOINT_DECISION,
        transport="cli",
        agent_id=actor,
        arguments=arguments,
        reasons=(f"{what} {reason} of event {link.sequence}",),
    )


def checkpoint_of(stored: StoredEvent) -> Checkpoint | None:
    """The checkpoint a stored event carries, or None when it is not one (or its arguments do not
    have the shape a checkpoint writes, which verify then reports)."""
    event = stored.event
    if event.tool != CHECKPOINT_TOOL or event.decision != CHECKPOINT_DECISION:
        return None
    args = event.arguments
    sequence, hash_ = args.get("sequence"), args.get("hash")
    if not isinstance(sequence, int) or not isinstance(hash_, str):
        return None
    signature, key_id = args.get("signature"), args.get("key_id")
    pruned_before = args.get("pruned_before")
    return Checkpoint(
        at_sequence=stored.sequence,
        time=event.time,
        sequence=sequence,
        hash=hash_,
        reason=str(args.get("reason") or "checkpoint"),
        signature=signature if isinstance(signature, str) else None,
        key_id=key_id if isinstance(key_id, str) else None,
        pruned_before=pruned_before if isinstance(pruned_before, str) else None,
    )


def is_checkpoint(event: AuditEvent) -> bool:
    """Checkpoints are trail bookkeeping, not tool calls: reports leave them out of call counts."""
    return event.tool == CHECKPOINT_TOOL
