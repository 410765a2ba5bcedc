"""Group commit: concurrent appends share transactions, and the chain stays one line.

On both real stores: 50 concurrent appends are written in far fewer transactions than events, a lone
append is not held back, one bad event in a batch fails only its own caller, closing the store writes
what was queued, and several processes appending at once with group commit keep one valid chain.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from server.audit.event import AuditEvent
from server.audit.verify import verify_trail
from server.store import StateStore, StoreError
from server.store.base import GroupCommit
from tests.store.test_audit_store import Backend

REPO = Path(__file__).resolve().parents[2]


def event(n: int = 0, **changes: object) -> AuditEvent:
    base = AuditEvent(
        id=f"gc-{n}-{uuid.uuid4().hex[:8]}",
        time=datetime.now(UTC),
        tool="query",
        decision="allow",
        agent_id=f"agent-{n % 7}",
        arguments={"sql": f"SELECT {n}"},
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def group_of(store: StateStore) -> GroupCommit:
    return store.group_commit  # type: ignore[attr-defined,no-any-return]


async def assert_intact(store: StateStore, count: int) -> None:
    verification = await verify_trail(store)
    assert verification.broken is None, verification.summary()
    assert verification.events == count


async def test_fifty_concurrent_appends_share_a_few_transactions(store: StateStore) -> None:
    stored = await asyncio.gather(*(store.append_audit(event(n)) for n in range(50)))

    group = group_of(store)
    assert sorted(s.sequence for s in stored) == list(range(1, 51))
    assert group.events == 50
    assert group.transactions <= 5, f"{group.transactions} transactions for 50 concurrent appends"
    await assert_intact(store, 50)


async def test_each_caller_gets_its_own_event_back(store: StateStore) -> None:
    events = [event(n) for n in range(20)]
    stored = await asyncio.gather(*(store.append_audit(e) for e in events))

    assert [s.event.id for s in stored] == [e.id for e in events]
    read = {s.sequence: s for s in await store.audit_events()}
    assert all(read[s.sequence] == s for s in stored)


async def test_a_lone_append_is_committed_at_once(store: StateStore) -> None:
    first = await store.append_audit(event(1))
    second = await store.append_audit(event(2))

    assert (first.sequence, second.sequence) == (1, 2)
    assert group_of(store).transactions == 2


async def test_a_duplicate_in_a_batch_fails_only_its_own_caller(store: StateStore) -> None:
    taken = await store.append_audit(event(0))
    events = [event(n) for n in range(1, 21)]
    events[7] = replace(events[7], id=taken.event.id)

    results = await asyncio.gather(*(store.append_audit(e) for e in events), return_exceptions=True)

    failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
    assert failed == [7]
    assert isinstance(results[7], StoreError)
    await assert_intact(store, 20)


async def test_closing_writes_what_was_queued(backend: Backend) -> None:
    store = await backend.open()
    appends = [asyncio.create_task(store.append_audit(event(n))) for n in range(30)]
    await asyncio.sleep(0)
    await store.close()

    assert sorted(stored.sequence for stored in await asyncio.gather(*appends)) == list(range(1, 31))
    reopened = await backend.open()
    try:
        await assert_intact(reopened, 30)
    finally:
        await reopened.close()


async def test_a_cancelled_caller_leaves_the_chain_whole(store: StateStore) -> None:
    tasks = [asyncio.create_task(store.append_audit(event(n))) for n in range(30)]
    await asyncio.sleep(0)
    for task in tasks[10:20]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    written = [r for r in results if not isinstance(r, BaseException)]
    assert len(written) >= 20
    head = await store.audit_chain_head()
    await assert_intact(store, head.sequence)


async def test_a_store_that_fails_fails_every_caller_in_the_batch_once(backend: Backend) -> None:
    store = await backend.open()
    try:
        await store.append_audit(event(0))
        await backend.execute("ALTER TABLE audit_events RENAME TO audit_events_moved")
        results = await asyncio.gather(*(store.append_audit(event(n)) for n in range(1, 11)), return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results)
        assert len({id(r) for r in results}) == 10  # one exception object per caller
        await backend.execute("ALTER TABLE audit_events_moved RENAME TO audit_events")
        await store.append_audit(event(11))
        await assert_intact(store, 2)
    finally:
        await store.close()


APPENDER = textwrap.dedent(
    """
    import asyncio, sys, uuid
    from datetime import UTC, datetime
    from server.audit.event import AuditEvent
    from server.store import open_state_store

    async def main(dsn, base_dir, rounds, width):
        store = await open_state_store(dsn, base_dir=base_dir)
        try:
            for _ in range(rounds):
                await asyncio.gather(*(
                    store.append_audit(AuditEvent(id=str(uuid.uuid4()), time=datetime.now(UTC), tool="query",
                                                  decision="allow", agent_id=sys.argv[5]))
                    for _ in range(width)))
            print(store.group_commit.transactions, store.group_commit.events)
        finally:
            await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    """
)


async def test_several_processes_with_group_commit_keep_one_valid_chain(backend: Backend) -> None:
    store = await backend.open()  # the schema exists before the race
    try:
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                APPENDER,
                backend.dsn,
                str(backend.base_dir),
                "4",
                "25",
                f"process-{i}",
                cwd=REPO,
                stdout=asyncio.subprocess.PIPE,
            )
            for i in range(4)
        ]
        outputs = await asyncio.gather(*(p.communicate() for p in procs))
        assert [p.returncode for p in procs] == [0, 0, 0, 0]
        transactions = [int(out.split()[0]) for out, _ in outputs]
        assert sum(transactions) < 4 * 100  # batches formed in every process
        await assert_intact(store, 400)
        agents = {s.event.agent_id for s in await store.audit_events()}
        assert agents == {f"process-{i}" for i in range(4)}
    finally:
        await store.close()
