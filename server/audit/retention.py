"""Retention: delete old events without losing the ability to verify what is left.

`prune(store, before)` deletes the events older than `before`, but first
1. verifies the part it is about to delete (so tampering cannot be laundered into a fresh start: a
   broken trail is never pruned),
2. appends a checkpoint of the last event it will delete (signed when `BASTION_AUDIT_KEY` is set),
   which `verify` then starts from,
and only then deletes, in one transaction. Export the old part first if it must be kept
(`bastion audit export --until DATE`); the export carries the hashes, so it verifies on its own.

"Older than" is by the events' times, as the trail's index has them; the cut is made at the last
event before `before` in chain order, so the trail that remains is always one unbroken suffix.

`AuditMaintenance` is the server's background task: it writes a signed checkpoint periodically when a
key is configured and prunes by the retention setting once a day, so neither needs a cron job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from server.audit.chain import ChainHead
from server.audit.checkpoint import AuditKey, audit_key_from_env, checkpoint_event
from server.audit.event import StoredEvent
from server.audit.verify import verify_trail
from server.errors import BastionError
from server.store.base import StateStore, StoreError

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT_INTERVAL_S = 3600.0
PRUNE_INTERVAL_S = 24 * 3600.0


class PruneRefused(BastionError):
    """The trail is broken, so pruning would destroy the evidence of it."""

    code = "prune_refused"


@dataclass(frozen=True)
class PruneResult:
    deleted: int
    #: the last deleted event, which the remaining trail now starts from (None when nothing was old)
    anchor: ChainHead | None
    checkpoint: StoredEvent | None


async def write_checkpoint(
    store: StateStore, key: AuditKey | None, *, actor: str | None = None, link: ChainHead | None = None
) -> StoredEvent:
    """Append a checkpoint of `link` (by default the current chain head). An empty trail has nothing
    to vouch for, so it is refused."""
    link = link or await store.audit_chain_head()
    if link.sequence == 0:
        raise StoreError("the audit trail is empty: there is nothing to checkpoint yet")
    return await store.append_audit(checkpoint_event(link, key, actor=actor))


async def prune(
    store: StateStore, before: datetime, key: AuditKey | None = None, *, actor: str | None = None
) -> PruneResult:
    """Delete every event before `before` (see the module's docstring for the guarantees)."""
    older = await store.audit_events(until=before, limit=1, newest_first=True)
    if not older:
        return PruneResult(0, None, None)
    last = older[0]
    verification = await verify_trail(store, key)
    if verification.broken is not None and verification.broken.sequence <= last.sequence:
        raise PruneRefused(
            f"the audit trail is broken {verification.broken}, so nothing was pruned",
            hint="Run `bastion audit verify`, investigate, and keep the trail as evidence.",
        )
    anchor = ChainHead(last.sequence, last.hash)
    checkpoint = await store.append_audit(
        checkpoint_event(
            anchor,
            key,
            reason="prune",
            actor=actor,
            extra={"pruned_before": before.astimezone(UTC).isoformat()},
        )
    )
    deleted = await store.delete_audit_through(last.sequence)
    log.info("pruned %d audit events up to sequence %d (before %s)", deleted, last.sequence, before.isoformat())
    return PruneResult(deleted, anchor, checkpoint)


def retention_days(config: Any) -> int | None:
    """`state.audit_retention_days` from the configuration, or None (keep everything)."""
    days = getattr(getattr(config, "state", None), "audit_retention_days", None)
    return int(days) if days else None


class AuditMaintenance:
    """Periodic checkpoints (with a key) and retention pruning (with a retention setting), on one
    background task. Failures are logged and retried on the next round; they never stop the server,
    since the calls themselves keep failing closed on a broken store."""

    def __init__(
        self,
        store: StateStore,
        key: AuditKey | None,
        *,
        retention_days: int | None,
        checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S,
    ) -> None:
        self.store = store
        self.key = key
        self.retention_days = retention_days
        self.checkpoint_interval_s = checkpoint_interval_s
        self._task: asyncio.Task[None] | None = None
        self._last_checkpointed = -1

    @property
    def needed(self) -> bool:
        return self.key is not None or self.retention_days is not None

    def start(self) -> None:
        if self.needed and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="bastion-audit-maintenance")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self, now: datetime | None = None, *, prune_now: bool = True) -> None:
        if prune_now and self.retention_days is not None:
            cutoff = (now or datetime.now(UTC)) - timedelta(days=self.retention_days)
            result = await prune(self.store, cutoff, self.key, actor="bastion (retention)")
            if result.deleted:
                log.warning("audit retention: pruned %d events older than %s", result.deleted, cutoff.isoformat())
        if self.key is not None:
            head = await self.store.audit_chain_head()
            if head.sequence > 0 and head.sequence != self._last_checkpointed:
                stored = await write_checkpoint(self.store, self.key, actor="bastion (periodic)", link=head)
                self._last_checkpointed = stored.sequence

    async def _run(self) -> None:
        interval = self.checkpoint_interval_s if self.key is not None else PRUNE_INTERVAL_S
        since_prune = PRUNE_INTERVAL_S  # prune on the first round
        while True:
            try:
                await self.run_once(prune_now=since_prune >= PRUNE_INTERVAL_S)
            except Exception as error:  # logged, retried next round
                log.error("audit maintenance failed: %s", getattr(error, "message", None) or type(error).__name__)
            if since_prune >= PRUNE_INTERVAL_S:
                since_prune = 0.0
            await asyncio.sleep(interval)
            since_prune += interval


def start_audit_maintenance(store: StateStore, config: Any) -> AuditMaintenance:
    """For the server's lifespan: periodic signed checkpoints when `BASTION_AUDIT_KEY` is set, daily
    pruning when `state.audit_retention_days` is; nothing runs when neither is. A key that is too
    short raises ConfigError, so a misconfigured server does not start."""
    maintenance = AuditMaintenance(store, audit_key_from_env(), retention_days=retention_days(config))
    maintenance.start()
    return maintenance
