"""Verify a stored trail end to end: the chain, the chain head, and every checkpoint in it.

`verify_trail` is what `bastion audit verify`, the auditor's report and the server's start-up check
share. It reads the trail in batches (a trail of millions never sits in memory), recomputes every
link from where the trail starts (the genesis, or the checkpoint `prune` left when it deleted older
events), and checks each checkpoint twice: its signature against `BASTION_AUDIT_KEY`, and the hash it
vouches for against the event at that sequence. The first problem, by sequence, is the one reported:
an auditor fixes the trail from the front.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass

from server.audit.chain import GENESIS_HASH, BrokenLink, ChainHead, StoredRow, verify_chain, verify_rows
from server.audit.checkpoint import CHECKPOINT_TOOL, AuditKey, Checkpoint, checkpoint_of
from server.store.base import StateStore, UnreadableEvent

VERIFY_BATCH = 10_000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verification:
    """What verification found, in the terms the CLI and the report print."""

    events: int
    head: ChainHead
    start: ChainHead
    broken: BrokenLink | None
    checkpoints: int = 0
    signed_checkpoints: int = 0
    #: checkpoints whose signature could not be checked, and why (no key, another key, unsigned)
    unchecked: tuple[str, ...] = ()
    seconds: float = 0.0
    first_sequence: int | None = None
    last_sequence: int | None = None

    @property
    def intact(self) -> bool:
        return self.broken is None

    def summary(self) -> str:
        """One line: what the CLI prints first and the report's headline."""
        if self.broken is not None:
            return f"audit chain BROKEN {self.broken}"
        span = "" if self.first_sequence is None else f" (sequence {self.first_sequence} to {self.last_sequence})"
        origin = "" if self.start.sequence == 0 else f", starting from the checkpoint of event {self.start.sequence}"
        signed = f", {self.signed_checkpoints} signed checkpoint(s) verified" if self.signed_checkpoints else ""
        return f"audit chain intact: {self.events} events verified{span}{origin}{signed}"


async def _checkpoints(store: StateStore) -> tuple[list[Checkpoint], BrokenLink | None]:
    found: list[Checkpoint] = []
    for stored in await store.audit_events_of_tool(CHECKPOINT_TOOL):
        checkpoint = checkpoint_of(stored)
        if checkpoint is None:
            return found, BrokenLink(
                stored.sequence, f"event {stored.sequence} is a checkpoint that does not say which event it vouches for"
            )
        if checkpoint.sequence >= stored.sequence:
            return found, BrokenLink(
                stored.sequence,
                f"the checkpoint at event {stored.sequence} vouches for event {checkpoint.sequence}, which comes "
                "after it",
            )
        found.append(checkpoint)
    return found, None


def _start(first: int, head: ChainHead, checkpoints: list[Checkpoint]) -> tuple[ChainHead, BrokenLink | None]:
    """Where the chain must start: the genesis, or the checkpoint of the last pruned event."""
    if first == 1:
        return ChainHead(0, GENESIS_HASH), None
    anchors = [c for c in checkpoints if c.sequence == first - 1]
    if anchors:
        return anchors[-1].link, None
    missing = "event 1 is missing" if first == 2 else f"events 1 to {first - 1} are missing"
    return ChainHead(0, GENESIS_HASH), BrokenLink(1, f"{missing} (deleted) and no checkpoint records them as pruned")


def _signatures(checkpoints: list[Checkpoint], key: AuditKey | None) -> tuple[int, list[str], BrokenLink | None]:
    signed, unchecked = 0, []
    for checkpoint in checkpoints:
        problem = checkpoint.check_signature(key)
        if problem is None:
            signed += 1
        elif problem == "forged":
            return (
                signed,
                unchecked,
                BrokenLink(
                    checkpoint.at_sequence,
                    f"the checkpoint at event {checkpoint.at_sequence} has a signature that does not match what it "
                    f"vouches for (event {checkpoint.sequence}): it was forged or edited",
                ),
            )
        else:
            unchecked.append(f"checkpoint at event {checkpoint.at_sequence}: {problem}")
    return signed, unchecked, None


def _against_checkpoints(
    batch: list[StoredRow], targets: dict[int, list[Checkpoint]], last_match: int
) -> tuple[int, BrokenLink | None]:
    """Each event a checkpoint vouches for must still have the hash the checkpoint recorded; when it
    does not, everything from the last matching checkpoint up to it is suspect (a rewritten tail)."""
    for sequence, _, hash_, _ in batch:
        for checkpoint in targets.get(sequence, ()):
            if checkpoint.hash != hash_:
                since = f"after event {last_match}" if last_match else "from the start"
                return last_match, BrokenLink(
                    sequence,
                    f"event {sequence} no longer has the hash the checkpoint at event "
                    f"{checkpoint.at_sequence} recorded: the trail was rewritten {since}, up to event "
                    f"{sequence} (the links were recomputed to hide it)",
                )
            last_match = sequence
    return last_match, None


async def verify_trail(
    store: StateStore, key: AuditKey | None = None, *, batch_size: int = VERIFY_BATCH
) -> Verification:
    """Verify the whole trail; events appended while it runs (beyond the head read first) are left
    for the next run, so a live server does not make the tail look wrong."""
    started = time.perf_counter()
    head = await store.audit_chain_head()
    genesis = ChainHead(0, GENESIS_HASH)

    def done(**values: object) -> Verification:
        return Verification(head=head, seconds=time.perf_counter() - started, **values)  # type: ignore[arg-type]

    try:
        checkpoints, broken = await _checkpoints(store)
    except UnreadableEvent as error:
        return done(events=0, start=genesis, broken=BrokenLink(error.sequence, f"{error.message} (altered by hand)"))
    first = await store.first_audit_sequence()
    signed, unchecked, forged = _signatures(checkpoints, key)
    broken = _broken_min(broken, forged)
    if first is None:
        if head.sequence != 0:
            broken = BrokenLink(1, f"the trail is empty but the store recorded events up to {head.sequence} (deleted)")
        return done(events=0, start=genesis, broken=broken, checkpoints=len(checkpoints))
    start, missing = _start(first, head, checkpoints)
    broken = _broken_min(broken, missing)
    targets: dict[int, list[Checkpoint]] = defaultdict(list)
    for checkpoint in checkpoints:
        if checkpoint.sequence >= first:
            targets[checkpoint.sequence].append(checkpoint)

    known = {checkpoint.at_sequence for checkpoint in checkpoints}
    link, count, last_match, last = start, 0, 0, None
    async for rows in store.iter_audit_rows(batch_size=batch_size):
        batch = [row for row in rows if row[0] <= head.sequence]  # later ones were appended meanwhile
        if not batch:
            break
        link, count, last_match, stop = _check(batch, link, count, targets, last_match, known)
        last = batch[-1][0]
        if stop is not None:
            broken = _broken_min(broken, stop)
            break
        if len(batch) < len(rows):
            break
    if broken is None:
        broken = verify_rows([], start=link, head=head)
    return done(
        events=count,
        start=start,
        broken=broken,
        checkpoints=len(checkpoints),
        signed_checkpoints=signed,
        unchecked=tuple(unchecked),
        first_sequence=first,
        last_sequence=last,
    )


def _broken_min(current: BrokenLink | None, candidate: BrokenLink | None) -> BrokenLink | None:
    if candidate is None:
        return current
    if current is None or candidate.sequence < current.sequence:
        return candidate
    return current


def _check(
    batch: list[StoredRow],
    link: ChainHead,
    count: int,
    targets: dict[int, list[Checkpoint]],
    last_match: int,
    known: set[int],
) -> tuple[ChainHead, int, int, BrokenLink | None]:
    hidden: list[int] = []

    def seen(sequence: int, record: dict[str, object]) -> None:
        if record.get("tool") == CHECKPOINT_TOOL and sequence not in known:
            hidden.append(sequence)

    broken = verify_rows(batch, start=link, seen=seen)
    if hidden and (broken is None or hidden[0] < broken.sequence):
        # found by reading the record, missed by the store's index: someone changed the `tool` column
        # to keep this checkpoint from being checked
        return (
            link,
            count,
            last_match,
            BrokenLink(
                hidden[0],
                f"event {hidden[0]} is a checkpoint the store's index does not list (its tool column was changed)",
            ),
        )
    checked = batch if broken is None else [row for row in batch if row[0] < broken.sequence]
    last_match, mismatch = _against_checkpoints(checked, targets, last_match)
    if mismatch is not None:
        return link, count, last_match, mismatch
    if broken is not None:
        return link, count + len(checked), last_match, broken
    return ChainHead(batch[-1][0], batch[-1][2]), count + len(batch), last_match, None


async def quick_check(store: StateStore, key: AuditKey | None = None, *, last: int = 1000) -> BrokenLink | None:
    """A cheap look at the end of the trail for the server's start-up: the last `last` events link to
    each other and end at the recorded head, and the latest checkpoint among them holds. The full
    check is `bastion audit verify`; this one only has to make a broken trail loud at once."""
    head = await store.audit_chain_head()
    try:
        events = await store.last_audit_events(last)
    except UnreadableEvent as error:
        return BrokenLink(error.sequence, error.message)
    if not events:
        return None if head.sequence == 0 else BrokenLink(1, "the trail is empty but the store recorded events")
    start = ChainHead(events[0].sequence - 1, events[0].prev_hash)
    broken = verify_chain(events, start=start, head=head)
    if broken is not None:
        return broken
    by_sequence = {s.sequence: s for s in events}
    for stored in reversed(events):
        checkpoint = checkpoint_of(stored)
        if checkpoint is None:
            continue
        if checkpoint.check_signature(key) == "forged":
            return BrokenLink(stored.sequence, "the latest checkpoint's signature does not verify")
        target = by_sequence.get(checkpoint.sequence)
        if target is not None and target.hash != checkpoint.hash:
            return BrokenLink(checkpoint.sequence, "an event no longer has the hash the latest checkpoint recorded")
        break
    return None


async def check_trail_at_start(store: StateStore, key: AuditKey | None = None) -> BrokenLink | None:
    """The server's start-up look at its trail: a broken one is logged as loudly as a log can be, and
    the server starts anyway (it keeps recording, and refusing to start would hide nothing). A store
    that cannot be read here will fail the calls themselves, closed."""
    try:
        broken = await quick_check(store, key)
    except Exception as error:  # the store's own errors surface on the first call
        log.error("the audit trail could not be checked at start-up: %s", getattr(error, "message", error))
        return None
    if broken is not None:
        log.critical(
            "AUDIT TRAIL BROKEN %s. The server keeps recording; run `bastion audit verify` to pinpoint the first "
            "broken link, and keep the store as evidence.",
            broken,
        )
    return broken
