"""The legacy SSE transport is protected the same way as streamable HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client

from tests.conftest import ScratchDatabase
from tests.identity.idp import JwksServer, TestIdP
from tests.identity.serving import RunningServer, free_port, running, write_config
from tests.identity.test_http_auth import AUTH_TOOL, bastion_config, bearer
from tests.shop import create_shop


@pytest.fixture(scope="module")
async def shop(scratch_db: ScratchDatabase) -> ScratchDatabase:
    await create_shop(scratch_db.app_dsn)
    return scratch_db


@pytest.fixture(scope="module")
def sse(shop: ScratchDatabase, jwks: JwksServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("sse-auth")
    port = free_port()
    write_config(folder, bastion_config(shop, jwks, port, folder))
    with running(folder, port, transport="sse") as served:
        yield served


async def test_over_sse_a_valid_token_reaches_the_tools(sse: RunningServer, idp: TestIdP) -> None:
    async with Client(sse_client(f"{sse.base}/sse", headers=bearer(idp.token())), mode="legacy") as client:
        result = await client.call_tool("describe", {"table": "customers"})
        assert not result.is_error
    [event] = [e for e in await sse.events() if e.tool == "describe"]
    assert (event.agent_id, event.groups, event.auth_method, event.transport) == (
        "analyst-bot",
        ("analytics",),
        "oauth",
        "sse",
    )


async def test_over_sse_a_bad_token_gets_401_and_is_audited(sse: RunningServer, idp: TestIdP) -> None:
    before = len(await sse.events())
    with httpx2.stream("GET", f"{sse.base}/sse", headers=bearer(idp.unsigned()), timeout=10) as response:
        assert response.status_code == 401
        assert "resource_metadata=" in response.headers["www-authenticate"]
    [event] = (await sse.events())[before:]
    assert event.tool == AUTH_TOOL and "algorithm 'none'" in (event.error or "")
    assert event.transport == "sse"
