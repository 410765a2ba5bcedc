"""The approver's HTTP API on `bastion serve --transport http`, authenticated with the same OAuth
setup as the MCP endpoint (a real JWKS served by the test): a person approves with their token, the
agent's human cannot approve their own request (over HTTP nor on the command line), and without
OAuth the API refuses everything."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from server.config import load_config
from tests.approvals.conftest import UPDATE, Setup, cli, country_of, reset_customer, text
from tests.conftest import ScratchDatabase
from tests.identity.conftest import oauth_settings
from tests.identity.idp import JwksServer, TestIdP, serve_jwks
from tests.identity.serving import RunningServer, free_port, running, write_config

PERSON = {"azp": "approvals-ui", "scope": "bastion:approve"}
AGENT = {"azp": "analyst-bot", "scope": "bastion:read bastion:query", "groups": ["bastion-etl"]}


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    yield from serve_jwks(TestIdP())


def config_data(shop: ScratchDatabase, jwks: JwksServer | None, port: int) -> dict[str, Any]:
    identity: dict[str, Any] = {
        "stdio_agent": "nobody",
        "users": {"bob@example.com": {"groups": ["approvers"]}, "alice@example.com": {"groups": ["approvers"]}},
    }
    if jwks is not None:
        jwks.idp.audience = f"http://127.0.0.1:{port}/mcp"
        identity["oauth"] = oauth_settings(
            jwks.url, jwks.idp.audience, tool_scopes={"query": ["bastion:query"], "approvals": ["bastion:approve"]}
        )
    return {
        "databases": {"main": {"dsn": shop.app_dsn, "read_only": False}},
        "state": {"dsn": "sqlite:///state.db"},
        "identity": identity,
    }


@pytest.fixture(scope="module")
def http(shop_db: ScratchDatabase, jwks: JwksServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("approvals-http")
    port = free_port()
    path = write_config(folder, config_data(shop_db, jwks, port))
    with running(folder, port) as served:
        setup = Setup(folder, path, load_config(path), shop_db)
        setup.served = served  # type: ignore[attr-defined]
        yield setup


def served(setup: Setup) -> RunningServer:
    return setup.served  # type: ignore[attr-defined,no-any-return]


def api(setup: Setup, method: str, path: str, token: str | None, **kwargs: Any) -> httpx2.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx2.request(method, f"{served(setup).base}{path}", headers=headers, timeout=15, **kwargs)


@contextlib.asynccontextmanager
async def agent_session(setup: Setup, token: str) -> Any:
    client = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30)
    async with Client(streamable_http_client(served(setup).mcp_url, http_client=client)) as session:
        yield session


async def test_a_person_approves_over_http_and_the_agent_runs_the_statement(http: Setup, jwks: JwksServer) -> None:
    idp = jwks.idp
    await reset_customer(http.shop, 7, "JP")
    agent_token = idp.token(email="bob@example.com", **AGENT)
    async with agent_session(http, agent_token) as agent:
        requested = await agent.call_tool("request_approval", {"sql": UPDATE, "justification": "moved"})
        assert not requested.is_error, text(requested)
        approval_id = requested.structured_content["approval_id"]

        bob = idp.token(email="bob@example.com", groups=["bastion-approvers"], **PERSON)
        listed = api(http, "GET", "/approvals", bob)
        assert listed.status_code == 200 and approval_id in {a["approval_id"] for a in listed.json()["approvals"]}
        own = api(http, "POST", f"/approvals/{approval_id}/approve", bob)
        assert own.status_code == 403 and "nobody approves their own request" in own.json()["message"]
        on_the_command_line = await cli(http, "approve", approval_id, "--as", "bob@example.com")
        assert on_the_command_line.code == 2 and "nobody approves their own request" in on_the_command_line.err

        alice = idp.token(email="alice@example.com", groups=["bastion-approvers"], **PERSON)
        shown = api(http, "GET", f"/approvals/{approval_id}", alice)
        assert shown.status_code == 200 and shown.json()["sql"] == UPDATE and shown.json()["status"] == "pending"
        approved = api(http, "POST", f"/approvals/{approval_id}/approve", alice, json={"reason": "verified"})
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "approved" and approved.json()["decided_by"] == "alice@example.com"
        again = api(http, "POST", f"/approvals/{approval_id}/deny", alice)
        assert again.status_code == 409 and "already approved" in again.json()["message"]

        ran = await agent.call_tool("query", {"sql": UPDATE, "purpose": "fix", "approval_id": approval_id})
        assert not ran.is_error, text(ran)
    assert await country_of(http.shop, 7) == "CH"
    decision = next(e for e in await served(http).events() if e.tool == "(approve)" and e.decision == "allow")
    assert decision.approver == "alice@example.com" and decision.auth_method == "oauth"
    assert decision.on_behalf_of == "bob@example.com" and decision.transport == "http"


async def test_people_without_the_right_token_are_refused(http: Setup, jwks: JwksServer) -> None:
    idp = jwks.idp
    async with agent_session(http, idp.token(email="carol@example.com", **AGENT)) as agent:
        approval_id = (
            await agent.call_tool("request_approval", {"sql": UPDATE, "justification": "x"})
        ).structured_content["approval_id"]
    path = f"/approvals/{approval_id}/approve"
    assert api(http, "POST", path, None).status_code == 401
    assert api(http, "POST", path, "not-a-token").status_code == 401
    assert api(http, "GET", "/approvals", idp.tampered()).status_code == 401
    no_person = api(http, "POST", path, idp.token(email=None, groups=["bastion-approvers"], **PERSON))
    assert no_person.status_code == 403 and "names no person" in no_person.json()["message"]
    no_scope = idp.token(email="alice@example.com", groups=["bastion-approvers"], azp="approvals-ui", scope="other")
    refused = api(http, "POST", path, no_scope)
    assert refused.status_code == 403 and "bastion:approve" in refused.json()["message"]
    eve = idp.token(email="eve@example.com", groups=["bastion-support"], **PERSON)
    assert api(http, "POST", path, eve).status_code == 404  # not an approver here: the request is not shown
    assert approval_id not in api(http, "GET", "/approvals", eve).text
    # the requesting agent's own token, even naming an approver, cannot approve its request
    own_client = idp.token(
        email="alice@example.com", groups=["bastion-approvers"], azp="analyst-bot", scope="bastion:approve"
    )
    refused = api(http, "POST", path, own_client)
    assert refused.status_code == 403 and "whose own token cannot approve it" in refused.json()["message"]
    still = api(
        http,
        "GET",
        f"/approvals/{approval_id}",
        idp.token(email="alice@example.com", groups=["bastion-approvers"], **PERSON),
    )
    assert still.json()["status"] == "pending"


async def test_without_oauth_the_http_api_refuses_everything(shop_db: ScratchDatabase, tmp_path: Path) -> None:
    port = free_port()
    write_config(tmp_path, config_data(shop_db, None, port))
    with running(tmp_path, port) as server:
        for method, path in (("GET", "/approvals"), ("GET", "/approvals/apr_x"), ("POST", "/approvals/apr_x/approve")):
            response = httpx2.request(method, f"{server.base}{path}", timeout=10)
            assert response.status_code == 403, (method, path, response.text)
            assert "needs identity.oauth" in response.json()["message"]
            assert "bastion approvals" in response.json()["hint"]
