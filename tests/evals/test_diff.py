"""`bastion eval diff`: recorded calls re-decided under candidate policies, nothing run."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from mcp import Client

from server.app import build_server
from server.config import load_config
from server.policy.schema import SHIPPED_POLICIES
from tests.conftest import ScratchDatabase
from tests.shop import create_shop
from tests.test_cli import bastion


async def test_a_policy_edit_lists_exactly_the_recorded_calls_it_changes(
    scratch_db: ScratchDatabase, tmp_path: Path
) -> None:
    await create_shop(scratch_db.app_dsn)
    (tmp_path / "bastion.yaml").write_text(
        yaml.safe_dump(
            {
                "databases": {"main": {"dsn": scratch_db.app_dsn}},
                "state": {"dsn": "sqlite:///state.db"},
                "identity": {"stdio_agent": "diff-agent", "agents": {"diff-agent": {"groups": ["analytics"]}}},
            }
        )
    )
    config = load_config(tmp_path / "bastion.yaml")
    async with Client(build_server(config, transport="memory"), mode="legacy") as client:
        for sql in ("SELECT count(*) FROM orders", "SELECT name FROM products", "SELECT email FROM customers"):
            result = await client.call_tool("query", {"sql": sql, "purpose": "weekly review"})
            assert not result.is_error
    candidate = tmp_path / "candidate"
    shutil.copytree(SHIPPED_POLICIES, candidate, ignore=shutil.ignore_patterns("examples", "tests"))
    (candidate / "freeze.cedar").write_text(
        '@id("freeze-orders")\n@reason("orders are frozen")\n'
        'forbid (principal, action == Action::"select", resource == Table::"main.public.orders");\n'
    )
    result = bastion("eval", "diff", "--config", "bastion.yaml", "--policies", str(candidate), cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "3 recorded calls compared, 1 would change" in result.stdout
    assert "SELECT count(*) FROM orders" in result.stdout and "decision allow -> deny" in result.stdout
    unchanged = bastion("eval", "diff", "--config", "bastion.yaml", "--policies", str(SHIPPED_POLICIES), cwd=tmp_path)
    assert unchanged.returncode == 0 and "0 would change" in unchanged.stdout
