"""`bastion serve` as a real process for identity tests: config on disk, log to a file, audit read back."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import yaml

from server.audit.event import AuditEvent
from server.store import open_state_store

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(extra)
    return env


@dataclass
class RunningServer:
    base: str
    folder: Path
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def mcp_url(self) -> str:
        return f"{self.base}/mcp"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def events(self) -> list[AuditEvent]:
        return await events_in(self.folder)

    def post(self, headers: dict[str, str], *, path: str = "/mcp", timeout: float = 15) -> httpx2.Response:
        return httpx2.post(f"{self.base}{path}", json=INITIALIZE, headers={**MCP_HEADERS, **headers}, timeout=timeout)


async def events_in(folder: Path) -> list[AuditEvent]:
    """The audit trail of a server whose config says `state: {dsn: sqlite:///state.db}`."""
    store = await open_state_store("sqlite:///state.db", base_dir=str(folder))
    try:
        return [stored.event for stored in await store.audit_events()]
    finally:
        await store.close()


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    path = folder / "bastion.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def running(
    folder: Path, port: int, transport: str = "http", env: dict[str, str] | None = None
) -> Iterator[RunningServer]:
    log = folder / f"server-{transport}.log"
    argv = [sys.executable, "-m", "server", "serve", "--config", str(folder / "bastion.yaml")]
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*argv, "--transport", transport, "--port", str(port)],
            env=env or clean_env(),
            stderr=sink,
            stdout=subprocess.DEVNULL,
        )
    server = RunningServer(f"http://127.0.0.1:{port}", folder, log, process)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited: {server.log_text()}")
            try:
                if httpx2.get(f"{server.base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"server did not start: {server.log_text()}")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
