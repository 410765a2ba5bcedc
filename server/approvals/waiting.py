"""Waiting for a decision without a busy loop.

`approval_status(wait_s=...)` parks the call on an `asyncio.Event` per approval id, which is set
when a decision is announced:

- in this process, by the approval service itself (the HTTP API, in-client confirmation);
- from any process sharing a PostgreSQL store, by its NOTIFY on the `bastion_approvals` channel,
  received through one LISTEN connection per server (`StateStore.listen_approvals`).

A SQLite store cannot notify another process, so a decision made by `bastion approvals approve`
(a separate process) is found by re-reading the store every `SQLITE_POLL_S` while someone waits:
one indexed read of one row, not a busy loop, and nothing at all while nobody waits. With
PostgreSQL the store is also re-read every `SAFETY_POLL_S` in case the listening connection was
lost (then the listener reconnects on the next wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from server.approvals.model import Approval, ApprovalStatus
from server.store.base import ApprovalListener, StateStore, StoreError

log = logging.getLogger(__name__)

SQLITE_POLL_S = 0.5
SAFETY_POLL_S = 5.0


class DecisionWaiter:
    """Per approval id, the events of the calls waiting for it."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._waiting: dict[str, set[asyncio.Event]] = {}
        self._listener: ApprovalListener | None = None
        self._listen_lock = asyncio.Lock()
        self._closed = False

    def wake(self, approval_id: str) -> None:
        """A decision (or a use) of `approval_id` was made: wake whoever waits for it."""
        for event in self._waiting.get(approval_id, ()):
            event.set()

    async def _ensure_listening(self) -> bool:
        """Whether decisions from other processes are pushed to us (PostgreSQL), starting or
        restarting the listener as needed."""
        if self.store.dialect != "postgres" or self._closed:
            return False
        async with self._listen_lock:
            if self._listener is not None and self._listener.alive:
                return True
            if self._listener is not None:
                with contextlib.suppress(Exception):
                    await self._listener.close()
                self._listener = None
            try:
                self._listener = await self.store.listen_approvals(self.wake)
            except StoreError as error:
                log.warning("not listening for approval decisions, polling instead: %s", error.message)
                return False
            return self._listener is not None

    async def wait(self, approval_id: str, timeout_s: float, read: Callable[[], Awaitable[Approval]]) -> Approval:
        """Return the approval as soon as it is no longer pending, or after `timeout_s` (or at
        its expiry, whichever is first), re-reading it from the store each time we are woken."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        event = asyncio.Event()
        self._waiting.setdefault(approval_id, set()).add(event)
        try:
            pushed = await self._ensure_listening() if timeout_s > 0 else False
            while True:
                event.clear()  # before the read: a decision after it still wakes us
                approval = await read()
                now = datetime.now(UTC)
                if approval.status_at(now) is not ApprovalStatus.PENDING:
                    return approval
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return approval
                until_expiry = (approval.expires_at - now).total_seconds()
                interval = SAFETY_POLL_S if pushed else SQLITE_POLL_S
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), timeout=max(0.01, min(remaining, interval, until_expiry)))
        finally:
            events = self._waiting.get(approval_id)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[approval_id]

    async def close(self) -> None:
        self._closed = True
        for events in self._waiting.values():
            for event in events:
                event.set()
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close()
            self._listener = None
