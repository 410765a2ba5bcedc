"""Over stdio, `BASTION_AGENT_TOKEN` proves who the agent is, once, at start-up."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters

from server.identity.api_keys import hash_key, new_key
from tests.conftest import ScratchDatabase
from tests.identity.conftest import oauth_settings
from tests.identity.idp import JwksServer, TestIdP
from tests.identity.serving import clean_env, events_in, write_config
from tests.shop import create_shop

SERVICE_KEY = new_key()


@pytest.fixture(scope="module")
async def folder(scratch_db: ScratchDatabase, jwks: JwksServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    await create_shop(scratch_db.app_dsn)
    folder = tmp_path_factory.mktemp("stdio-token")
    write_config(folder, config_of(scratch_db, jwks))
    (folder / "db.txt").write_text(scratch_db.app_dsn)
    return folder


def config_of(db: ScratchDatabase, jwks: JwksServer, **identity: Any) -> dict[str, Any]:
    return {
        "databases": {"main": {"dsn": db.app_dsn}},
        "state": {"dsn": "sqlite:///state.db"},
        "identity": {
            "oauth": oauth_settings(jwks.url, jwks.idp.audience),
            "api_keys": [{"hash": hash_key(SERVICE_KEY), "agent": "batch-bot", "groups": ["batch"]}],
            **identity,
        },
    }


def params(folder: Path, token: str) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "server", "serve", "--config", str(folder / "bastion.yaml")],
        env=clean_env(BASTION_AGENT_TOKEN=token),
    )


def start_and_fail(folder: Path, token: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "serve", "--config", str(config or folder / "bastion.yaml")],
        env=clean_env(BASTION_AGENT_TOKEN=token),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_a_valid_token_proves_the_stdio_agent_for_the_whole_session(folder: Path, idp: TestIdP) -> None:
    token = idp.token(azp="desktop-bot", jti="stdio-jti")
    before = len(await events_in(folder))
    async with Client(params(folder, token), read_timeout_seconds=30) as client:
        described = await client.call_tool("describe", {})
        assert not described.is_error
        # no argument can change who is calling: unknown arguments are ignored or refused, never used
        await client.call_tool("query", {"sql": "SELECT 1 AS one", "purpose": "t", "agent": "root-bot"})
    events = (await events_in(folder))[before:]
    assert {(e.agent_id, e.groups, e.on_behalf_of, e.auth_method) for e in events} == {
        ("desktop-bot", ("analytics",), "alice@example.com", "stdio_token")
    }
    assert len(events) == 2


async def test_an_api_key_can_prove_a_stdio_agent_too(folder: Path) -> None:
    before = len(await events_in(folder))
    async with Client(params(folder, SERVICE_KEY), read_timeout_seconds=30) as client:
        assert not (await client.call_tool("describe", {})).is_error
    [event] = (await events_in(folder))[before:]
    assert (event.agent_id, event.groups, event.auth_method) == ("batch-bot", ("batch",), "api_key")


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda idp: idp.token(exp=int(time.time()) - 600), "token expired"),
        (lambda idp: idp.unsigned(), "algorithm 'none'"),
        (lambda idp: idp.token(scope="bastion:query"), "insufficient scope: the token lacks bastion:read"),
        (lambda idp: "bst_not-a-configured-key-at-all-000000000", "unknown"),
    ],
    ids=["expired", "alg none", "missing scope", "unknown key"],
)
def test_a_bad_token_stops_start_up_with_one_line(folder: Path, idp: TestIdP, make: Any, reason: str) -> None:
    done = start_and_fail(folder, make(idp))
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("bastion: BASTION_AGENT_TOKEN was refused: ") and reason in lines[0], lines[0]


def test_a_token_for_another_agent_than_the_configured_one_stops_start_up(
    folder: Path, jwks: JwksServer, idp: TestIdP
) -> None:
    other = folder / "named"
    other.mkdir(exist_ok=True)
    db = ScratchDatabase("x", "", (folder / "db.txt").read_text())
    config = write_config(other, config_of(db, jwks, stdio_agent="file-agent"))
    done = start_and_fail(folder, idp.token(), config)
    assert done.returncode != 0
    assert "proves agent 'analyst-bot', but the configuration names 'file-agent'" in done.stderr
