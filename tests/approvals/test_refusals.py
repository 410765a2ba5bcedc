"""Every way an approval can fail to cover a call, and every approver who may not decide: each is a
clear refusal, and no statement runs without a matching, live approval."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.approvals.conftest import (
    UPDATE,
    Setup,
    as_agent,
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
def setup(shop_db: ScratchDatabase, tmp_path: Path) -> Setup:
    return make_setup(shop_db, tmp_path)


async def approved_id(setup: Setup, sql: str = UPDATE) -> str:
    async with session(setup.config) as client:
        approval_id = (await request(client, sql)).structured_content["approval_id"]
    result = await cli(setup, "approve", approval_id, "--as", "alice")
    assert result.code == 0, result.err
    return approval_id


async def test_an_unknown_approval_id_is_refused_and_nothing_runs(setup: Setup) -> None:
    await reset_customer(setup.shop, 7, "JP")
    async with session(setup.config) as client:
        result = await query(client, approval_id="apr_does-not-exist")
        assert result.is_error and text(result).startswith("Refused: approval apr_does-not-exist does not exist")
        assert "request_approval" in text(result)
        status = await client.call_tool("approval_status", {"approval_id": "apr_nope"})
        assert status.is_error and "does not exist" in text(status)
    assert await country_of(setup.shop, 7) == "JP"
    refused = [e for e in await setup.events() if e.approval_id == "apr_does-not-exist"]
    assert refused and refused[0].decision == "deny"


async def test_another_agents_approval_is_refused(setup: Setup) -> None:
    await reset_customer(setup.shop, 7, "JP")
    approval_id = await approved_id(setup)
    async with session(as_agent(setup.config, "other-bot")) as other:
        result = await query(other, approval_id=approval_id)
        assert result.is_error and "was not requested by this agent" in text(result)
        status = await other.call_tool("approval_status", {"approval_id": approval_id})
        assert status.is_error and "was not requested by this agent" in text(status)
    assert await country_of(setup.shop, 7) == "JP"
    async with session(setup.config) as owner:  # the approval was not spent by the refusal
        assert not (await query(owner, approval_id=approval_id)).is_error
    assert await country_of(setup.shop, 7) == "CH"


@pytest.mark.parametrize(
    "changed",
    [
        "UPDATE customers SET country = 'CH' WHERE id = 8",
        "UPDATE customers SET country = 'DE' WHERE id = 7",
        "UPDATE customers SET country = 'CH' WHERE id = 7 OR id = 8",
        "UPDATE customers SET \"country\" = 'CH' WHERE id = 7",
    ],
)
async def test_an_approval_for_another_statement_is_refused(setup: Setup, changed: str) -> None:
    await reset_customer(setup.shop, 7, "JP")
    await reset_customer(setup.shop, 8, "US")
    approval_id = await approved_id(setup)
    async with session(setup.config) as client:
        result = await query(client, changed, approval_id=approval_id)
        assert result.is_error and "covers a different statement" in text(result)
    assert await country_of(setup.shop, 7) == "JP" and await country_of(setup.shop, 8) == "US"


async def test_an_approval_for_another_database_is_refused(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    setup = make_setup(shop_db, tmp_path)
    second = setup.config.databases["main"]
    config = setup.config.model_copy(update={"databases": {**setup.config.databases, "copy": second}})
    await reset_customer(shop_db, 7, "JP")
    async with session(config) as client:
        approval_id = (await request(client)).structured_content["approval_id"]
        assert (await cli(setup, "approve", approval_id, "--as", "alice")).code == 0
        result = await query(client, approval_id=approval_id, database="copy")
        assert result.is_error and "is for database main, not copy" in text(result)
    assert await country_of(shop_db, 7) == "JP"


async def test_an_expired_approval_is_refused(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    setup = make_setup(shop_db, tmp_path, ttl_s=1)
    await reset_customer(shop_db, 7, "JP")
    async with session(setup.config) as client:
        approval_id = (await request(client)).structured_content["approval_id"]
        assert (await cli(setup, "approve", approval_id, "--as", "alice")).code == 0
        await asyncio.sleep(1.2)
        result = await query(client, approval_id=approval_id)
        assert result.is_error and f"approval {approval_id} expired at" in text(result)
        status = await client.call_tool("approval_status", {"approval_id": approval_id})
        assert status.structured_content["status"] == "expired"
    assert await country_of(shop_db, 7) == "JP"


async def test_a_pending_request_cannot_be_approved_after_it_expires(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    setup = make_setup(shop_db, tmp_path, ttl_s=1)
    async with session(setup.config) as client:
        approval_id = (await request(client)).structured_content["approval_id"]
    await asyncio.sleep(1.2)
    result = await cli(setup, "approve", approval_id, "--as", "alice")
    assert result.code == 2 and f"approval {approval_id} expired at" in result.err


async def test_a_person_without_the_right_cannot_approve(setup: Setup) -> None:
    async with session(setup.config) as client:
        approval_id = (await request(client)).structured_content["approval_id"]
        result = await cli(setup, "approve", approval_id, "--as", "bob")
        assert result.code == 2
        assert result.err.startswith(f"bastion: bob may not decide approval {approval_id}")
        assert "Traceback" not in result.err
        status = await client.call_tool("approval_status", {"approval_id": approval_id})
        assert status.structured_content["status"] == "pending"
    refusals = [e for e in await setup.events() if e.tool == "(approve)"]
    assert refusals and refusals[-1].decision == "deny" and refusals[-1].approver == "bob"
    assert refusals[-1].error and refusals[-1].error.startswith("approval_forbidden")


async def test_a_name_that_is_not_a_configured_user_is_refused(setup: Setup) -> None:
    async with session(setup.config) as client:
        approval_id = (await request(client)).structured_content["approval_id"]
    result = await cli(setup, "approve", approval_id, "--as", "mallory")
    assert result.code == 2 and "'mallory' is not a user this configuration knows" in result.err
    assert "alice, bob" in result.err


async def test_a_decided_request_cannot_be_decided_again(setup: Setup) -> None:
    approval_id = await approved_id(setup)
    result = await cli(setup, "deny", approval_id, "--as", "alice")
    assert result.code == 2 and f"approval {approval_id} was already approved by alice" in result.err
    missing = await cli(setup, "approve", "apr_missing", "--as", "alice")
    assert missing.code == 2 and "does not exist" in missing.err


async def test_wait_s_out_of_range_is_a_clear_error(setup: Setup) -> None:
    async with session(setup.config) as client:
        approval_id = (await request(client)).structured_content["approval_id"]
        for wait_s in (61, -1):
            result = await client.call_tool("approval_status", {"approval_id": approval_id, "wait_s": wait_s})
            assert result.is_error and "wait_s must be a number of seconds from 0 to 60" in text(result)
        quick = await client.call_tool("approval_status", {"approval_id": approval_id, "wait_s": 0})
        assert quick.structured_content["status"] == "pending"


async def test_requests_that_no_approval_could_help_are_refused(setup: Setup) -> None:
    async with session(setup.config) as client:
        read = await request(client, "SELECT id FROM products")
        assert read.is_error and "needs no approval" in text(read) and "query tool" in text(read)
        ddl = await request(client, "DROP TABLE orders")
        assert ddl.is_error and text(ddl).startswith("Refused: schema changes")
        empty = await request(client, justification="  ")
        assert empty.is_error and "justification is required" in text(empty)
        broken = await request(client, "UPDATE customers SET")
        assert broken.is_error and text(broken).startswith("Refused:")
    requests = [e for e in await setup.events() if e.tool == "request_approval"]
    assert len(requests) == 4 and all(e.approval_id is None for e in requests)
    store = await setup.state_store()
    try:
        assert await store.list_approvals() == []
    finally:
        await store.close()


async def test_a_read_only_database_gets_no_approvals(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    setup = make_setup(shop_db, tmp_path)
    main = setup.config.databases["main"].model_copy(update={"read_only": True})
    config = setup.config.model_copy(update={"databases": {"main": main}})
    async with session(config) as client:
        result = await request(client)
        assert result.is_error and "configured read-only" in text(result)
