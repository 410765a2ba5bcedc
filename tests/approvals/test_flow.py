"""The whole approval flow through real MCP sessions and the real command line: an UPDATE that
policy sends to approval is requested, approved by a permitted person with `bastion approvals
approve`, run once with the approval id, and the audit trail tells the story."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.approvals.conftest import (
    UPDATE,
    Setup,
    cli,
    country_of,
    make_setup,
    query,
    request,
    reset_customer,
    session,
    text,
)
from tests.conftest import ScratchDatabase


@pytest.fixture
def setup(shop_db: ScratchDatabase, tmp_path: Path, state_dsn: str) -> Setup:
    return make_setup(shop_db, tmp_path, state_dsn=state_dsn)


async def test_an_update_runs_once_after_a_permitted_person_approves_it(setup: Setup) -> None:
    await reset_customer(setup.shop, 7, "JP")
    async with session(setup.config) as client:
        refused = await query(client)
        assert refused.is_error and text(refused).startswith("Needs approval:")

        requested = await request(client)
        assert not requested.is_error, text(requested)
        data = requested.structured_content
        approval_id = data["approval_id"]
        assert approval_id.startswith("apr_") and data["status"] == "pending"
        assert data["expires_at"] and data["mode"] == "human"
        assert "group approvers" in data["who_can_approve"]["summary"]
        assert data["who_can_approve"]["groups"] == ["approvers"]
        assert data["who_can_approve"]["configured_users"] == ["alice"]

        early = await query(client, approval_id=approval_id)
        assert early.is_error and "still waiting" in text(early)
        assert await country_of(setup.shop, 7) == "JP"

        listed = await cli(setup, "list")
        assert listed.code == 0 and approval_id in listed.out and "pending" in listed.out
        shown = await cli(setup, "show", approval_id)
        assert shown.code == 0 and UPDATE in shown.out and "customer moved" in shown.out

        approved = await cli(setup, "approve", approval_id, "--as", "alice", "--reason", "checked the ticket")
        assert approved.code == 0, approved.err
        assert f"approved {approval_id}" in approved.out

        status = await client.call_tool("approval_status", {"approval_id": approval_id})
        assert status.structured_content["status"] == "approved"
        assert status.structured_content["decided_by"] == "alice"
        assert status.structured_content["decision_reason"] == "checked the ticket"

        # whitespace, comments and keyword case do not matter
        spelled = "update  customers\n  SET country = 'CH' -- moved to Zurich\n WHERE id = 7;"
        ran = await query(client, spelled, approval_id=approval_id)
        assert not ran.is_error, text(ran)
        assert ran.structured_content["decision"]["verdict"] == "allow"
        assert await country_of(setup.shop, 7) == "CH"

        again = await query(client, approval_id=approval_id)
        assert again.is_error and "already used" in text(again)
        used = await client.call_tool("approval_status", {"approval_id": approval_id})
        assert used.structured_content["status"] == "used" and used.structured_content["used_at"]

    events = [e for e in await setup.events() if e.approval_id == approval_id]
    story = [(e.tool, e.decision) for e in events]
    assert story[0] == ("request_approval", "approval_required")
    assert ("(approve)", "allow") in story
    assert ("query", "allow") in story
    decision = next(e for e in events if e.tool == "(approve)")
    assert decision.approver == "alice" and "checked the ticket" in decision.reasons[0]
    run = next(e for e in events if e.tool == "query" and e.decision == "allow")
    assert run.approver == "alice" and run.statement_kind == "update"
    assert story.index(("(approve)", "allow")) < story.index(("query", "allow"))


async def test_approval_status_waits_and_returns_as_soon_as_a_decision_is_made(setup: Setup) -> None:
    """PostgreSQL: the command line's NOTIFY wakes the waiter at once (the safety re-read is every
    5 s); SQLite: the waiter re-reads the row every 0.5 s while it waits."""
    async with session(setup.config) as client:
        approval_id = (await request(client)).structured_content["approval_id"]
        loop = asyncio.get_running_loop()
        waiting = asyncio.create_task(client.call_tool("approval_status", {"approval_id": approval_id, "wait_s": 30}))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        decided = await cli(setup, "deny", approval_id, "--as", "alice", "--reason", "not this week")
        assert decided.code == 0, decided.err
        after_decision = loop.time()
        result = await asyncio.wait_for(waiting, timeout=10)
        assert loop.time() - after_decision < 1.5
        assert result.structured_content["status"] == "denied", text(result)
        assert result.structured_content["decided_by"] == "alice"

        denied = await query(client, approval_id=approval_id)
        assert denied.is_error and "denied by alice: not this week" in text(denied)
