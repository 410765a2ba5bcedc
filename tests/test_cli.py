"""The `bastion` command as a user runs it: one readable line on error, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from mcp import Client

from server.app import build_server
from server.config import load_config
from tests.conftest import ScratchDatabase
from tests.shop import create_shop


def bastion(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    return subprocess.run(
        [sys.executable, "-m", "server", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_a_config_with_an_unknown_key_fails_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "bastion.yaml").write_text("databases:\n  main:\n    dsn: sqlite:///x.db\n    colour: red\n")
    result = bastion("serve", "--config", "bastion.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert result.stderr.strip() == "bastion: invalid configuration: databases.main.colour: unknown key"


def test_a_privileged_role_is_refused_at_start_up(tmp_path: Path) -> None:
    dsn = os.environ.get("BASTION_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    (tmp_path / "bastion.yaml").write_text(yaml.safe_dump({"databases": {"main": {"dsn": dsn}}}))
    result = bastion("serve", "--config", "bastion.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "superuser" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_audit_export_and_tail_show_the_calls(scratch_db: ScratchDatabase, tmp_path: Path) -> None:
    await create_shop(scratch_db.app_dsn)
    (tmp_path / "bastion.yaml").write_text(
        yaml.safe_dump(
            {
                "databases": {"main": {"dsn": scratch_db.app_dsn}},
                "state": {"dsn": "sqlite:///s.db"},
                "identity": {"stdio_agent": "cli-agent"},
            }
        )
    )
    config = load_config(tmp_path / "bastion.yaml")
    async with Client(build_server(config, transport="memory"), mode="legacy") as client:
        await client.call_tool("query", {"sql": "SELECT count(*) FROM orders", "purpose": "export test"})
        await client.call_tool("query", {"sql": "DELETE FROM orders", "purpose": "export test"})
    exported = bastion("audit", "--config", "bastion.yaml", "export", "--format", "jsonl", cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr
    records = [json.loads(line) for line in exported.stdout.splitlines()]
    assert [r["decision"] for r in records] == ["allow", "approval_required"]
    assert all(r["agent_id"] == "cli-agent" and r["purpose"] == "export test" for r in records)
    future = bastion("audit", "--config", "bastion.yaml", "export", "--since", "2999-01-01", cwd=tmp_path)
    assert future.returncode == 0 and future.stdout == ""
    tail = bastion("audit", "--config", "bastion.yaml", "tail", cwd=tmp_path)
    assert tail.returncode == 0 and "cli-agent" in tail.stdout and "approval_required" in tail.stdout
    verify = bastion("audit", "--config", "bastion.yaml", "verify", cwd=tmp_path)
    assert verify.returncode == 0 and "2 events" in verify.stdout


def test_a_bad_since_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bastion.yaml").write_text("databases:\n  main:\n    dsn: sqlite:///x.db\n")
    result = bastion("audit", "--config", "bastion.yaml", "export", "--since", "yesterday-ish", cwd=tmp_path)
    assert result.returncode != 0 and len(result.stderr.strip().splitlines()) == 1


def test_demo_runs_the_scripted_session(tmp_path: Path) -> None:
    result = bastion("demo", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "DROP TABLE" in result.stdout and "Refused" in result.stdout
    assert "demo-agent" in result.stdout
