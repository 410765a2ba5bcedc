"""`bastion serve` as a real process: stdio (what MCP clients launch), streamable HTTP and SSE."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import yaml
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters

from tests.conftest import ScratchDatabase
from tests.shop import create_shop


@pytest.fixture(scope="module")
async def config_file(scratch_db: ScratchDatabase, tmp_path_factory: pytest.TempPathFactory) -> Path:
    await create_shop(scratch_db.app_dsn)
    folder = tmp_path_factory.mktemp("serve")
    path = folder / "bastion.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "databases": {"main": {"dsn": scratch_db.app_dsn, "max_rows": 50}},
                "state": {"dsn": "sqlite:///state.db"},
                "identity": {"stdio_agent": "file-agent"},
            }
        )
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}


@pytest.fixture
def http_server(config_file: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    transport = request.param
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "server",
            "serve",
            "--config",
            str(config_file),
            "--transport",
            transport,
            "--port",
            str(port),
        ],
        env=server_env(),
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            process.kill()
            pytest.fail(f"server did not start: {process.stderr.read().decode() if process.stderr else ''}")
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_over_stdio_an_mcp_client_lists_tools_and_queries(config_file: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "server", "serve", "--config", str(config_file)], env=server_env()
    )
    async with Client(params, read_timeout_seconds=30) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert {"query", "describe", "explain"} <= names
        result = await client.call_tool("query", {"sql": "SELECT count(*) AS n FROM customers", "purpose": "t"})
        assert result.structured_content["rows"] == [[40]]


@pytest.mark.parametrize("http_server", ["http"], indirect=True)
async def test_over_streamable_http_at_mcp(http_server: str) -> None:
    async with Client(f"{http_server}/mcp") as client:
        result = await client.call_tool(
            "query", {"sql": "SELECT id FROM customers ORDER BY id LIMIT 2", "purpose": "t"}
        )
        assert result.structured_content["rows"] == [[1], [2]]


@pytest.mark.parametrize("http_server", ["sse"], indirect=True)
async def test_over_legacy_sse(http_server: str) -> None:
    async with Client(sse_client(f"{http_server}/sse"), mode="legacy") as client:
        result = await client.call_tool("describe", {"table": "customers"})
        assert result.structured_content["table"]["name"] == "customers"
