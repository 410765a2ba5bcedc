"""N agents at once over streamable HTTP: throughput, median and p99 latency, errors.

A real `bastion serve --transport http` process on a scratch PostgreSQL database; each agent is its
own MCP client session issuing a mix of calls (describe, a point lookup, a join with aggregates, a
masked PII read, explain), as agents do. Run alone: `python -m evals.bench.concurrency`.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import yaml
from mcp import Client

from evals.bench.common import JOIN_AGGREGATE, POINT_LOOKUP, create_bench_database, drop_bench_database, median, p99

AGENTS = tuple(int(n) for n in os.environ.get("BASTION_BENCH_AGENTS", "1,10,50").split(","))
CALLS_PER_AGENT = int(os.environ.get("BASTION_BENCH_CALLS", "20"))
MIX: tuple[tuple[str, dict[str, Any]], ...] = (
    ("describe", {}),
    ("query", {"sql": POINT_LOOKUP, "purpose": "benchmark"}),
    ("query", {"sql": JOIN_AGGREGATE, "purpose": "benchmark"}),
    ("query", {"sql": "SELECT id, email, country FROM customers WHERE id < 50", "purpose": "benchmark"}),
    ("explain", {"sql": POINT_LOOKUP}),
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _agent(url: str, calls: int, latencies: list[float], errors: list[str]) -> None:
    async with Client(url, read_timeout_seconds=120) as client:
        for index in range(calls):
            tool, arguments = MIX[index % len(MIX)]
            started = time.perf_counter()
            try:
                result = await client.call_tool(tool, arguments)
                if result.is_error:
                    errors.append(str(result.content[0])[:120])
            except Exception as error:  # a transport failure is a measured error, not a crash
                errors.append(type(error).__name__)
            latencies.append((time.perf_counter() - started) * 1000)


async def _round(url: str, agents: int) -> dict[str, float]:
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    await asyncio.gather(*(_agent(url, CALLS_PER_AGENT, latencies, errors) for _ in range(agents)))
    elapsed = time.perf_counter() - started
    return {
        "agents": agents,
        "calls": len(latencies),
        "throughput": len(latencies) / elapsed,
        "median_ms": median(latencies),
        "p99_ms": p99(latencies),
        "errors": len(errors),
    }


async def measure() -> list[dict[str, float]]:
    db = await create_bench_database()
    port = _free_port()
    try:
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "bastion.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "databases": {"main": {"dsn": db.app_dsn, "max_rows": 1000, "pool_max_size": 20}},
                        "state": {"dsn": db.app_dsn},
                        "identity": {"stdio_agent": "bench-agent"},
                    }
                )
            )
            env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
            server = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "server",
                    "serve",
                    "--config",
                    str(config),
                    "--transport",
                    "http",
                    "--port",
                    str(port),
                ],
                env=env,
                stderr=subprocess.DEVNULL,
            )
            try:
                for _ in range(120):
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        await asyncio.sleep(0.25)
                url = f"http://127.0.0.1:{port}/mcp"
                await _round(url, 1)  # warm-up: classification, caches, pools
                return [await _round(url, agents) for agents in AGENTS]
            finally:
                server.terminate()
                server.wait(timeout=20)
    finally:
        await drop_bench_database(db)


def report(rows: list[dict[str, float]]) -> str:
    lines = [
        f"Each agent is its own MCP session over streamable HTTP to one `bastion serve` process, {CALLS_PER_AGENT} "
        "calls each, cycling describe / point lookup / 3-table join / masked PII read / explain; the audit trail "
        "in the same PostgreSQL.",
        "",
        "| agents | calls | throughput (calls/s) | median (ms) | p99 (ms) | errors |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['agents']} | {row['calls']} | {row['throughput']:.1f} | {row['median_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['errors']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(asyncio.run(measure())))
