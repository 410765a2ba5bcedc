"""The embedded demo's configuration: used by `bastion demo`, and by `bastion serve` without a config.

It is written out as `.bastion/bastion.yaml` so the demo's server process reads a real file, the
same way an operator's would, and a curious user can open it.
"""

from __future__ import annotations

from pathlib import Path

from server.config import BastionConfig, load_config

DEMO_AGENT = "demo-agent"
DEMO_APPROVER = "alice"

DEMO_CONFIG_YAML = f"""\
# The embedded demo's configuration (written by `bastion demo`; safe to delete).
databases:
  demo:
    dsn: sqlite:///demo.db          # relative to this file's folder
    read_only: false                # writes may run, once a human approved them
    statement_timeout_ms: 5000
    max_rows: 200
state:
  dsn: sqlite:///state.db           # the audit trail
identity:
  stdio_agent: {DEMO_AGENT}
  agents:
    {DEMO_AGENT}: {{groups: [analytics]}}
  users:                            # people who decide approvals: bastion approvals approve ID --as NAME
    {DEMO_APPROVER}: {{groups: [approvers]}}
"""


def write_demo_config(base: Path) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    path = base / "bastion.yaml"
    path.write_text(DEMO_CONFIG_YAML, encoding="utf-8")
    return path


def demo_config(base: Path) -> BastionConfig:
    path = base / "bastion.yaml"
    if not path.exists():
        write_demo_config(base)
    return load_config(path)
