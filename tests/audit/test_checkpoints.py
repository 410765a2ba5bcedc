"""Verifying a stored trail: tampering caught at the right place, signed checkpoints that catch a
rewritten tail, and pruning that leaves a trail verifiable from its checkpoint. On both real stores."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from server.audit.chain import ChainHead, hashed_json, link_hash
from server.audit.checkpoint import CHECKPOINT_TOOL, AuditKey, audit_key_from_env
from server.audit.retention import AuditMaintenance, PruneRefused, prune, start_audit_maintenance, write_checkpoint
from server.audit.verify import check_trail_at_start, quick_check, verify_trail
from server.errors import ConfigError
from server.store import StateStore
from tests.audit.conftest import KEY, T0, append_calls, call
from tests.store.test_audit_store import Backend


def set_agent(agent: str, at: int) -> Callable[[int, dict[str, Any], str], None]:
    def change(sequence: int, record: dict[str, Any], prev: str) -> None:
        if sequence == at:
            record["agent_id"] = agent

    return change


async def rewrite_from(
    backend: Backend, store: StateStore, sequence: int, change: Callable[[int, dict[str, Any], str], None]
) -> None:
    """What a forger who knows the algorithm (but not the key) does: change records from `sequence` on
    and recompute every hash after the change, and the chain head, so that the links all hold again.
    `change(sequence, record, prev_hash)` edits a record in place."""
    events = await store.audit_events()
    prev = next(e.hash for e in events if e.sequence == sequence - 1) if sequence > 1 else "0" * 64
    statements = []
    for stored in events:
        if stored.sequence < sequence:
            continue
        record = stored.event.to_record()
        change(stored.sequence, record, prev)
        text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
        new_hash = link_hash(hashed_json(record), stored.sequence, prev)
        quoted = text.replace("'", "''")
        statements.append(
            f"UPDATE audit_events SET record = '{quoted}', prev_hash = '{prev}', hash = '{new_hash}' "
            f"WHERE sequence = {stored.sequence}"
        )
        prev = new_hash
    statements.append(f"UPDATE audit_chain_head SET hash = '{prev}' WHERE id = 1")
    await backend.execute(*statements)


# --- the chain, through verify_trail --------------------------------------------------------------


async def test_an_intact_trail_verifies_with_its_count(trail: StateStore) -> None:
    await append_calls(trail, 12)

    result = await verify_trail(trail, batch_size=5)

    assert result.intact and result.events == 12
    assert result.summary() == "audit chain intact: 12 events verified (sequence 1 to 12)"


@pytest.mark.parametrize(
    ("tampering", "sequence", "words"),
    [
        (
            ["UPDATE audit_events SET record = replace(record, 'support-bot', 'nobody') WHERE sequence = 4"],
            4,
            "altered",
        ),
        (["DELETE FROM audit_events WHERE sequence = 6"], 6, "missing"),
        (["DELETE FROM audit_events WHERE sequence >= 9"], 9, "tail was deleted"),
        (["DELETE FROM audit_events WHERE sequence <= 2"], 1, "no checkpoint records them as pruned"),
        (
            [
                "UPDATE audit_events SET sequence = 1005 WHERE sequence = 5",
                "UPDATE audit_events SET sequence = 1006 WHERE sequence = 6",
                "UPDATE audit_events SET sequence = 6 WHERE sequence = 1005",
                "UPDATE audit_events SET sequence = 5 WHERE sequence = 1006",
            ],
            5,
            "does not follow",
        ),
    ],
    ids=["update", "delete", "delete-tail", "delete-head", "swap"],
)
async def test_tampering_is_caught_at_the_right_place(
    trail: StateStore, backend: Backend, tampering: list[str], sequence: int, words: str
) -> None:
    await append_calls(trail, 10)
    await backend.execute(*tampering)

    result = await verify_trail(trail, batch_size=3)

    assert result.broken is not None, result.summary()
    assert result.broken.sequence == sequence, result.summary()
    assert words in result.broken.reason
    assert result.summary().startswith(f"audit chain BROKEN at sequence {sequence}: ")


async def test_an_inserted_event_is_caught_where_it_was_put(trail: StateStore, backend: Backend) -> None:
    await append_calls(trail, 6)
    events = await trail.audit_events()
    fake = call(99, agent_id="forger")
    record = json.dumps(fake.to_record(), sort_keys=True, separators=(",", ":")).replace("'", "''")
    fake_hash = link_hash(hashed_json(fake.to_record()), 4, events[2].hash)
    await backend.execute(
        "UPDATE audit_events SET sequence = sequence + 1000 WHERE sequence >= 4",
        "UPDATE audit_events SET sequence = sequence - 999 WHERE sequence > 1000",
        "INSERT INTO audit_events (sequence, id, time, tool, decision, record, prev_hash, hash) VALUES "
        f"(4, 'fake', '2026-06-01T12:30:00.000000Z', 'query', 'allow', '{record}', '{events[2].hash}', '{fake_hash}')",
    )

    result = await verify_trail(trail)

    assert result.broken is not None and result.broken.sequence == 5


async def test_an_unreadable_record_is_reported_at_its_sequence(trail: StateStore, backend: Backend) -> None:
    await append_calls(trail, 4)
    await backend.execute("UPDATE audit_events SET record = 'not json' WHERE sequence = 3")

    result = await verify_trail(trail)

    assert result.broken is not None and result.broken.sequence == 3
    assert "cannot be read" in result.broken.reason


async def test_events_appended_during_verification_are_not_a_broken_tail(trail: StateStore) -> None:
    await append_calls(trail, 5)

    class Growing:
        """The store as a live server leaves it: one more event lands after the head was read."""

        def __getattr__(self, name: str) -> object:
            return getattr(trail, name)

        async def audit_chain_head(self) -> ChainHead:
            head = await trail.audit_chain_head()
            await trail.append_audit(call(6))
            return head

    result = await verify_trail(Growing())  # type: ignore[arg-type]
    assert result.intact and result.events == 5


# --- signed checkpoints ---------------------------------------------------------------------------


async def test_a_rewritten_tail_passes_the_links_but_not_the_signed_checkpoint(
    trail: StateStore, backend: Backend
) -> None:
    key = AuditKey.from_text(KEY)
    await append_calls(trail, 5)
    checkpoint = await write_checkpoint(trail, key, actor="auditor")
    await append_calls(trail, 5, start=6)
    assert (await verify_trail(trail, key)).signed_checkpoints == 1

    await rewrite_from(backend, trail, 3, set_agent("someone-else", at=3))

    unsigned_view = await verify_trail(trail)  # without the key, the checkpoint still holds the hash
    keyed = await verify_trail(trail, key)
    for result in (unsigned_view, keyed):
        assert result.broken is not None, result.summary()
        assert result.broken.sequence == 5
        assert "rewritten from the start, up to event 5" in result.broken.reason
    assert checkpoint.sequence == 6


async def test_a_forged_checkpoint_is_caught_with_the_key(trail: StateStore, backend: Backend) -> None:
    key = AuditKey.from_text(KEY)
    await append_calls(trail, 4)
    await write_checkpoint(trail, key)
    await append_calls(trail, 2, start=5)
    # the forger rewrites event 2 and the checkpoint's hash to match, recomputing the links

    def change(sequence: int, record: dict[str, Any], prev: str) -> None:
        set_agent("forger", at=2)(sequence, record, prev)
        if sequence == 5:  # the checkpoint of event 4: make it vouch for the new hash
            record["arguments"]["hash"] = prev

    await rewrite_from(backend, trail, 2, change)

    assert (await verify_trail(trail)).intact  # without the key nothing shows
    result = await verify_trail(trail, key)
    assert result.broken is not None and result.broken.sequence == 5
    assert "forged" in result.broken.reason


async def test_checkpoints_signed_with_another_key_are_reported_not_failed(trail: StateStore) -> None:
    await append_calls(trail, 3)
    await write_checkpoint(trail, AuditKey.from_text("x" * 40))

    result = await verify_trail(trail, AuditKey.from_text(KEY))

    assert result.intact and result.signed_checkpoints == 0
    assert result.unchecked and "another key" in result.unchecked[0]


async def test_an_empty_trail_has_nothing_to_checkpoint(trail: StateStore) -> None:
    with pytest.raises(Exception, match="nothing to checkpoint"):
        await write_checkpoint(trail, None)


def test_a_short_key_is_refused_and_the_key_never_prints() -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        audit_key_from_env({"BASTION_AUDIT_KEY": "short"})
    assert audit_key_from_env({}) is None
    key = audit_key_from_env({"BASTION_AUDIT_KEY": KEY})
    assert key is not None and KEY not in repr(key) and len(key.key_id) == 16


# --- pruning --------------------------------------------------------------------------------------


async def test_pruning_keeps_the_rest_verifiable_from_its_checkpoint(trail: StateStore) -> None:
    key = AuditKey.from_text(KEY)
    await append_calls(trail, 10)  # one an hour from T0 + 1h

    result = await prune(trail, T0 + timedelta(hours=6), key, actor="ops")

    assert result.deleted == 5 and result.anchor is not None and result.anchor.sequence == 5
    remaining = await trail.audit_events()
    assert [e.sequence for e in remaining] == [6, 7, 8, 9, 10, 11]
    assert remaining[-1].event.tool == CHECKPOINT_TOOL
    verification = await verify_trail(trail, key)
    assert verification.intact, verification.summary()
    assert verification.start.sequence == 5 and verification.events == 6
    assert "starting from the checkpoint of event 5" in verification.summary()


async def test_pruning_twice_and_appending_after_still_verifies(trail: StateStore) -> None:
    await append_calls(trail, 10)
    await prune(trail, T0 + timedelta(hours=4))
    await append_calls(trail, 3, start=11)
    await prune(trail, T0 + timedelta(hours=8))

    verification = await verify_trail(trail)
    assert verification.intact, verification.summary()
    assert (await prune(trail, T0)).deleted == 0


async def test_deleting_the_prune_checkpoint_is_caught(trail: StateStore, backend: Backend) -> None:
    await append_calls(trail, 6)
    result = await prune(trail, T0 + timedelta(hours=3))
    assert result.checkpoint is not None
    await backend.execute(f"DELETE FROM audit_events WHERE sequence = {result.checkpoint.sequence}")

    verification = await verify_trail(trail)
    assert verification.broken is not None and verification.broken.sequence == 1


async def test_a_broken_trail_is_never_pruned(trail: StateStore, backend: Backend) -> None:
    await append_calls(trail, 6)
    await backend.execute("UPDATE audit_events SET record = replace(record, 'etl-bot', 'x') WHERE sequence = 2")

    with pytest.raises(PruneRefused, match="at sequence 2"):
        await prune(trail, T0 + timedelta(hours=5))
    assert len(await trail.audit_events()) == 6


async def test_maintenance_prunes_by_retention_and_checkpoints_with_a_key(trail: StateStore) -> None:
    await append_calls(trail, 6)
    maintenance = AuditMaintenance(trail, AuditKey.from_text(KEY), retention_days=1)

    await maintenance.run_once(now=T0 + timedelta(days=1, hours=4))
    await maintenance.run_once(now=T0 + timedelta(days=1, hours=4))  # nothing new: no second checkpoint

    events = await trail.audit_events()
    assert events[0].sequence == 4
    assert [e.event.tool for e in events[-2:]] == [CHECKPOINT_TOOL, CHECKPOINT_TOOL]
    verification = await verify_trail(trail, AuditKey.from_text(KEY))
    assert verification.intact and verification.signed_checkpoints == 2


async def test_the_start_up_check_sees_a_broken_tail_quickly(trail: StateStore, backend: Backend) -> None:
    key = AuditKey.from_text(KEY)
    await append_calls(trail, 8)
    assert await quick_check(trail, key) is None
    await backend.execute("DELETE FROM audit_events WHERE sequence = 8")

    broken = await quick_check(trail, key)
    assert broken is not None and broken.sequence == 8


async def test_a_broken_trail_is_logged_loudly_at_start_up(
    trail: StateStore, backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    await append_calls(trail, 5)
    assert await check_trail_at_start(trail) is None
    await backend.execute("UPDATE audit_events SET record = replace(record, 'etl-bot', 'x') WHERE sequence = 5")

    with caplog.at_level(logging.CRITICAL, logger="server.audit.verify"):
        broken = await check_trail_at_start(trail)

    assert broken is not None and broken.sequence == 5
    assert "AUDIT TRAIL BROKEN at sequence 5" in caplog.text and "bastion audit verify" in caplog.text


async def test_maintenance_starts_only_when_configured(trail: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BASTION_AUDIT_KEY", raising=False)
    idle = start_audit_maintenance(trail, object())
    assert not idle.needed and idle._task is None
    await idle.stop()

    monkeypatch.setenv("BASTION_AUDIT_KEY", KEY)
    await append_calls(trail, 2)
    running = start_audit_maintenance(trail, object())
    try:
        for _ in range(100):
            if (await trail.audit_chain_head()).sequence == 3:
                break
            await asyncio.sleep(0.01)
        assert (await trail.audit_events())[-1].event.tool == CHECKPOINT_TOOL
    finally:
        await running.stop()

    monkeypatch.setenv("BASTION_AUDIT_KEY", "short")
    with pytest.raises(ConfigError):
        start_audit_maintenance(trail, object())


async def test_a_checkpoint_hidden_from_the_index_is_still_found(trail: StateStore, backend: Backend) -> None:
    key = AuditKey.from_text(KEY)
    await append_calls(trail, 4)
    await write_checkpoint(trail, key)
    await append_calls(trail, 2, start=5)
    # rewrite event 2 and every hash after it, and relabel the checkpoint's indexed column so that
    # verify would not look it up: its record still says what it is
    await rewrite_from(backend, trail, 2, set_agent("forger", at=2))
    await backend.execute("UPDATE audit_events SET tool = 'query' WHERE sequence = 5")

    result = await verify_trail(trail, key)

    assert result.broken is not None and result.broken.sequence == 5
    assert "index does not list" in result.broken.reason
