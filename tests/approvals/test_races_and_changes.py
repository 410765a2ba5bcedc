"""Use once, under the policies of the moment: concurrent uses of one approval run the statement
exactly once, and a policy change between approval and use means a new request."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import asyncpg

from tests.approvals.conftest import ROOT, cli, make_setup, query, request, session, text
from tests.conftest import ScratchDatabase

INSERT = "INSERT INTO big (id, payload) VALUES (-{n}, 'approved row')"


async def rows_with_id(shop: ScratchDatabase, row_id: int) -> int:
    conn = await asyncpg.connect(shop.admin_dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM big WHERE id = $1", row_id))
    finally:
        await conn.close()


async def test_concurrent_uses_of_one_approval_run_the_statement_once(
    shop_db: ScratchDatabase, tmp_path: Path, state_dsn: str
) -> None:
    setup = make_setup(shop_db, tmp_path, state_dsn=state_dsn)
    marker = 100 if state_dsn.startswith("sqlite") else 200
    sql = INSERT.format(n=marker)
    assert await rows_with_id(shop_db, -marker) == 0
    async with session(setup.config) as first, session(setup.config) as second:
        approval_id = (await request(first, sql)).structured_content["approval_id"]
        assert (await cli(setup, "approve", approval_id, "--as", "alice")).code == 0
        # two servers (each its own pools) and several calls each, all at once
        calls = [query(client, sql, approval_id=approval_id) for client in (first, second) for _ in range(3)]
        results = await asyncio.gather(*calls)
    ran = [r for r in results if not r.is_error]
    refused = [r for r in results if r.is_error]
    assert len(ran) == 1, [text(r) for r in results]
    assert len(refused) == 5 and all("already used" in text(r) for r in refused), [text(r) for r in refused]
    assert await rows_with_id(shop_db, -marker) == 1
    runs = [e for e in await setup.events() if e.approval_id == approval_id and e.tool == "query"]
    assert sorted(e.decision for e in runs) == ["allow"] + ["deny"] * 5


def policy_copy(folder: Path) -> Path:
    policies = folder / "policies"
    policies.mkdir()
    shutil.copy(ROOT / "policies" / "default.cedar", policies / "default.cedar")
    return policies


async def wait_for_version_change(client: object, before: str) -> str:
    for _ in range(50):
        explained = await client.call_tool("explain", {"sql": "SELECT id FROM products"})  # type: ignore[attr-defined]
        version = explained.structured_content["decision"]["policy_version"]
        if version != before:
            return str(version)
        await asyncio.sleep(0.1)
    raise AssertionError("the policy change was not picked up")


async def test_a_policy_change_between_approval_and_use_needs_a_new_request(
    shop_db: ScratchDatabase, tmp_path: Path
) -> None:
    policies = policy_copy(tmp_path)
    setup = make_setup(shop_db, tmp_path, policies=str(policies))
    sql = INSERT.format(n=300)
    async with session(setup.config) as client:
        requested = (await request(client, sql)).structured_content
        approval_id, version = requested["approval_id"], requested["policy_version"]
        assert (await cli(setup, "approve", approval_id, "--as", "alice")).code == 0

        (policies / "extra.cedar").write_text(
            '@id("extra-describe")\npermit (principal, action == Action::"describe", resource);\n'
        )
        new_version = await wait_for_version_change(client, version)

        result = await query(client, sql, approval_id=approval_id)
        assert result.is_error
        assert f"the policies changed since approval {approval_id} was requested" in text(result)
        assert version in text(result) and new_version in text(result)
        assert await rows_with_id(shop_db, -300) == 0

        # the new request, under the new policies, works
        again = (await request(client, sql)).structured_content
        assert again["policy_version"] == new_version
        assert (await cli(setup, "approve", again["approval_id"], "--as", "alice")).code == 0
        assert not (await query(client, sql, approval_id=again["approval_id"])).is_error
    assert await rows_with_id(shop_db, -300) == 1


async def test_a_request_made_under_old_policies_cannot_be_approved(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    policies = policy_copy(tmp_path)
    setup = make_setup(shop_db, tmp_path, policies=str(policies))
    async with session(setup.config) as client:
        approval_id = (await request(client, INSERT.format(n=301))).structured_content["approval_id"]
    (policies / "extra.cedar").write_text('@id("extra")\npermit (principal, action == Action::"describe", resource);\n')
    result = await cli(setup, "approve", approval_id, "--as", "alice")
    assert result.code == 2 and "the policies changed since approval" in result.err
    denied = await cli(setup, "deny", approval_id, "--as", "alice", "--reason", "stale")
    assert denied.code == 0, denied.err


async def test_who_may_approve_follows_the_policies(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    shutil.copy(ROOT / "policies" / "default.cedar", policies / "default.cedar")
    text_ = (policies / "default.cedar").read_text().replace('Group::"approvers"', 'Group::"dba"')
    (policies / "default.cedar").write_text(text_)
    setup = make_setup(
        shop_db,
        tmp_path,
        policies=str(policies),
        users={"alice": {"groups": ["approvers"]}, "dora": {"groups": ["dba"]}},
    )
    async with session(setup.config) as client:
        requested = (await request(client, INSERT.format(n=302))).structured_content
        assert requested["who_can_approve"]["groups"] == ["dba"]
        assert requested["who_can_approve"]["configured_users"] == ["dora"]
    approval_id = requested["approval_id"]
    assert (await cli(setup, "approve", approval_id, "--as", "alice")).code == 2
    assert (await cli(setup, "approve", approval_id, "--as", "dora")).code == 0
