"""The cost of governance: Bastion's `query` path against raw asyncpg on the same pool.

Measures, on a scratch PostgreSQL database:
- a point lookup, a 3-table join with aggregates, a 10,000-row scan: raw `conn.fetch` vs the governed
  pipeline (identify, analyze, authorize, enforce, rewrite, execute, audit), with each stage's median;
- the governance stages for the join with a cold analyzer cache (a new SQL text every call) and warm;
- peak memory added by querying a 1,000,000-row table with the default max_rows (in a subprocess);
- end to end over stdio: `bastion serve` vs an ungoverned MCP server on the same SDK, 1,000 rows x 9.
"""

from __future__ import annotations

import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from evals.bench.common import (
    JOIN_AGGREGATE,
    MILLION,
    POINT_LOOKUP,
    SCAN_1K_9COLS,
    SCAN_10K,
    SCAN_10K_PII,
    BenchDatabase,
    create_bench_database,
    drop_bench_database,
    median,
    timed,
)
from server.app import RuntimeHolder
from server.config import parse_config
from server.encoding import encode_rows
from server.identity.agent import ClientInfo, TransportInfo
from server.pipeline import QUERY, ToolCall, run

GOVERNANCE_STAGES = ("identify", "scopes", "analyze", "authorize", "enforce", "rewrite", "audit")
REPEAT = int(os.environ.get("BASTION_BENCH_REPEAT", "200"))


def bench_config(db: BenchDatabase, state_dir: str, state_dsn: str | None = None) -> Any:
    return parse_config(
        {
            "databases": {"main": {"dsn": db.app_dsn, "max_rows": 10_000, "max_result_bytes": 64 << 20}},
            "state": {"dsn": state_dsn or "sqlite:///state.db"},
            "identity": {"stdio_agent": "bench-agent"},
        },
        base_dir=state_dir,
    )


def _call(sql: str, max_rows: int | None = None) -> ToolCall:
    return ToolCall(
        tool="query",
        arguments={"sql": sql, "purpose": "benchmark"},
        transport=TransportInfo(transport="memory", session_id="bench", client=ClientInfo("bench", "1")),
        sql=sql,
        purpose="benchmark",
        max_rows=max_rows,
    )


async def in_process(db: BenchDatabase, state_dsn: str | None = None) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as state_dir:
        holder = RuntimeHolder(bench_config(db, state_dir, state_dsn), "memory")
        async with holder.use() as runtime:
            pool = runtime.databases["main"].pool  # type: ignore[attr-defined]
            for label, sql in (
                ("point lookup", POINT_LOOKUP),
                ("3-table join", JOIN_AGGREGATE),
                ("10,000-row scan", SCAN_10K),
                ("10,000-row scan, 3 PII columns masked", SCAN_10K_PII),
            ):
                repeat = REPEAT if "10,000" not in label else max(20, REPEAT // 5)

                async def raw(sql: str = sql) -> None:
                    async with pool.acquire() as conn:
                        await conn.fetch(sql)

                stage_samples: dict[str, list[float]] = {}

                async def governed(sql: str = sql, samples: dict[str, list[float]] = stage_samples) -> None:
                    state = await run(runtime, _call(sql), QUERY)
                    started = time.perf_counter()
                    encode_rows(state.result.rows)  # type: ignore[union-attr]
                    samples.setdefault("encode", []).append((time.perf_counter() - started) * 1000)
                    for stage, ms in state.timings.items():
                        samples.setdefault(stage, []).append(ms)

                raw_ms = median(await timed(raw, repeat=repeat))
                governed_ms = median(await timed(governed, repeat=repeat))
                stages = {stage: median(values) for stage, values in stage_samples.items()}
                governed_ms -= stages.get("encode", 0.0)
                figures[label] = {
                    "raw_ms": raw_ms,
                    "governed_ms": governed_ms,
                    "ratio": governed_ms / raw_ms,
                    "stages": stages,
                    "governance_ms": sum(stages.get(s, 0.0) for s in GOVERNANCE_STAGES),
                }

            counter = iter(range(10**9))
            cold_samples: dict[str, list[float]] = {}

            async def cold_join() -> None:
                sql = JOIN_AGGREGATE.replace("count(*) AS orders", f"count(*) + {next(counter)} AS orders")
                state = await run(runtime, _call(sql), QUERY)
                for stage, ms in state.timings.items():
                    cold_samples.setdefault(stage, []).append(ms)

            await timed(cold_join, repeat=REPEAT)
            cold = {stage: median(values) for stage, values in cold_samples.items()}
            figures["join, cold analyzer cache"] = {
                "stages": cold,
                "governance_ms": sum(cold.get(s, 0.0) for s in GOVERNANCE_STAGES),
            }
    return figures


def memory_probe(db: BenchDatabase) -> dict[str, float]:
    """Peak RSS added by one governed query of the million-row table, in a fresh process."""
    code = f"""
import asyncio, tempfile, json, tracemalloc
from evals.bench.overhead import bench_config, _call
from evals.bench.common import BenchDatabase
from server.app import RuntimeHolder
from server.pipeline import QUERY, run
db = BenchDatabase({db.name!r}, {db.admin_dsn!r}, {db.app_dsn!r})
async def main():
    with tempfile.TemporaryDirectory() as d:
        config = bench_config(db, d)
        config = config.model_copy(update={{"databases": {{"main": config.databases["main"].model_copy(
            update={{"max_rows": 1000}})}}}})
        async with RuntimeHolder(config, "memory").use() as runtime:
            await run(runtime, _call("SELECT 1"), QUERY)
            tracemalloc.start()
            state = await run(runtime, _call({MILLION!r}), QUERY)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(json.dumps({{"added_mb": peak / 2**20, "rows": state.result.row_count,
                               "truncated": state.result.truncated}}))
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    import json

    return json.loads(out.strip().splitlines()[-1])


async def end_to_end(db: BenchDatabase) -> dict[str, float]:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    with tempfile.TemporaryDirectory() as folder:
        config = Path(folder) / "bastion.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "databases": {"main": {"dsn": db.app_dsn, "max_rows": 1000}},
                    "state": {"dsn": "sqlite:///state.db"},
                    "identity": {"stdio_agent": "bench-agent"},
                }
            )
        )
        governed = StdioServerParameters(
            command=sys.executable, env=env, args=["-m", "server", "serve", "--config", str(config)]
        )
        ungoverned = StdioServerParameters(
            command=sys.executable, env=env, args=["-m", "evals.bench.ungoverned_server", db.app_dsn]
        )
        results: dict[str, float] = {}
        repeat = max(20, REPEAT // 4)
        plain_1k = SCAN_1K_9COLS.replace("full_name, email, ", "").replace(", notes", "")
        for server_label, params in (("ungoverned", ungoverned), ("bastion", governed)):
            async with Client(params, read_timeout_seconds=60) as client:
                for query_label, sql in (("pii", SCAN_1K_9COLS), ("plain", plain_1k)):
                    arguments = {"sql": sql} if server_label == "ungoverned" else {"sql": sql, "purpose": "benchmark"}

                    async def call(client: Client = client, arguments: dict[str, str] = arguments) -> None:
                        result = await client.call_tool("query", arguments)
                        assert not result.is_error, result.content

                    results[f"{server_label}_{query_label}"] = median(await timed(call, repeat=repeat, warmup=5))
        results["ratio_pii"] = results["bastion_pii"] / results["ungoverned_pii"]
        results["ratio_plain"] = results["bastion_plain"] / results["ungoverned_plain"]
        return results


async def measure() -> dict[str, Any]:
    db = await create_bench_database()
    try:
        return {
            "in_process": await in_process(db),
            "in_process_pg_state": await in_process(db, state_dsn=db.app_dsn),
            "memory": memory_probe(db),
            "end_to_end": await end_to_end(db),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    finally:
        await drop_bench_database(db)


def report(figures: dict[str, Any]) -> str:
    lines = [
        "Governed = the whole `query` pipeline in process (identify, scopes, analyze, authorize, enforce, rewrite, "
        "execute, mask, audit); raw = `conn.fetch` on the same pool. Governance stages = every stage but execute and "
        "mask. Encoding the rows for JSON (needed by any MCP server) is the `encode` column below.",
        "",
        "| query | raw asyncpg (ms) | governed (ms) | ratio | governance stages (ms) |",
        "|---|---|---|---|---|",
    ]
    for label, f in figures["in_process"].items():
        if "raw_ms" in f:
            lines.append(
                f"| {label} | {f['raw_ms']:.3f} | {f['governed_ms']:.3f} | {f['ratio']:.2f}x "
                f"| {f['governance_ms']:.3f} |"
            )
    lines.append("")
    lines.append("Median time of each stage (ms), SQLite state store (default) and PostgreSQL state store:")
    lines.append("")
    stages = ("identify", "scopes", "analyze", "authorize", "enforce", "rewrite", "execute", "mask", "audit", "encode")
    lines.append("| query | " + " | ".join(stages) + " |")
    lines.append("|---|" + "---|" * len(stages))
    for store, key in (("sqlite", "in_process"), ("postgres", "in_process_pg_state")):
        for label, f in figures[key].items():
            cells = " | ".join(f"{f['stages'].get(s, 0.0):.3f}" for s in stages)
            lines.append(f"| {label} ({store} state) | {cells} |")
    mem = figures["memory"]
    e2e = figures["end_to_end"]
    lines += [
        "",
        f"- 1,000,000-row table with max_rows 1000: peak Python memory during the call {mem['added_mb']:.1f} MB "
        f"({mem['rows']} rows returned, truncated={mem['truncated']}).",
        f"- End to end over stdio, 1,000 rows x 9 columns of which 3 hold PII (Bastion masks them): ungoverned MCP "
        f"server {e2e['ungoverned_pii']:.2f} ms, Bastion {e2e['bastion_pii']:.2f} ms ({e2e['ratio_pii']:.2f}x).",
        f"- End to end over stdio, 1,000 rows x 6 columns without PII: ungoverned MCP server "
        f"{e2e['ungoverned_plain']:.2f} ms, Bastion {e2e['bastion_plain']:.2f} ms ({e2e['ratio_plain']:.2f}x).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(asyncio.run(measure())))
