"""In-client confirmation: where the policies that send a statement to approval say
`@approval("client")`, the person in the MCP client is asked through elicitation and their answer
is recorded; a client without elicitation falls back to the out-of-band flow."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import mcp_types as types

from tests.approvals.conftest import ROOT, Setup, cli, country_of, make_setup, query, request, reset_customer, session
from tests.approvals.conftest import text as text_of
from tests.conftest import ScratchDatabase


def client_mode_setup(shop: ScratchDatabase, folder: Path) -> Setup:
    policies = folder / "policies"
    policies.mkdir()
    shutil.copy(ROOT / "policies" / "default.cedar", policies / "default.cedar")
    source = (policies / "default.cedar").read_text()
    marked = source.replace(
        '@id("default-write-needs-approval")', '@approval("client")\n@id("default-write-needs-approval")'
    )
    assert marked != source
    (policies / "default.cedar").write_text(marked)
    return make_setup(shop, folder, policies=str(policies))


def answering(action: str, content: dict[str, Any] | None = None) -> Any:
    asked: list[str] = []

    async def callback(context: Any, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params.message)
        return types.ElicitResult(action=action, content=content)

    callback.asked = asked  # type: ignore[attr-defined]
    return callback


async def test_the_person_in_the_client_confirms_and_the_statement_runs(
    shop_db: ScratchDatabase, tmp_path: Path
) -> None:
    setup = client_mode_setup(shop_db, tmp_path)
    await reset_customer(shop_db, 7, "JP")
    callback = answering("accept", {"approve": True, "reason": "yes, that one"})
    async with session(setup.config, elicitation_callback=callback) as client:
        result = await request(client)
        assert not result.is_error, text_of(result)
        data = result.structured_content
        assert data["mode"] == "client" and data["status"] == "approved"
        assert data["decision_reason"] == "yes, that one"
        assert "UPDATE customers SET country = 'CH' WHERE id = 7" in callback.asked[0]
        ran = await query(client, approval_id=data["approval_id"])
        assert not ran.is_error, text_of(ran)
    assert await country_of(shop_db, 7) == "CH"
    decision = next(e for e in await setup.events() if e.tool == "(approve)")
    assert decision.transport == "client" and decision.auth_method == "client"


async def test_a_declined_confirmation_denies_the_request(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    setup = client_mode_setup(shop_db, tmp_path)
    async with session(setup.config, elicitation_callback=answering("decline")) as client:
        data = (await request(client)).structured_content
        assert data["status"] == "denied"
        refused = await query(client, approval_id=data["approval_id"])
        assert refused.is_error and "was denied" in text_of(refused)


async def test_without_elicitation_the_request_waits_for_an_approver(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    setup = client_mode_setup(shop_db, tmp_path)
    async with session(setup.config) as client:
        data = (await request(client)).structured_content
        assert data["mode"] == "client" and data["status"] == "pending"
        assert (await cli(setup, "approve", data["approval_id"], "--as", "alice")).code == 0
        status = await client.call_tool("approval_status", {"approval_id": data["approval_id"]})
        assert status.structured_content["status"] == "approved"


async def test_a_dismissed_question_leaves_the_request_to_approvers(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    setup = client_mode_setup(shop_db, tmp_path)
    async with session(setup.config, elicitation_callback=answering("cancel")) as client:
        data = (await request(client)).structured_content
        assert data["status"] == "pending"


async def test_without_the_annotation_the_client_is_never_asked(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    setup = make_setup(shop_db, tmp_path)
    callback = answering("accept", {"approve": True, "reason": ""})
    async with session(setup.config, elicitation_callback=callback) as client:
        data = (await request(client)).structured_content
    assert data["mode"] == "human" and data["status"] == "pending" and callback.asked == []
