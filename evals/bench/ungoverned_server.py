"""The baseline for the end-to-end benchmark: an MCP server on the same SDK with no governance.

One tool runs the SQL it is given on an asyncpg pool and returns the rows as a plain dict — what an
ungoverned "postgres MCP server" does. Bastion's stdio cost is compared against this.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from mcp.server.mcpserver import Context, MCPServer

from server.encoding import encode_rows


def build(dsn: str) -> MCPServer[asyncpg.Pool]:
    @contextlib.asynccontextmanager
    async def lifespan(_: MCPServer[asyncpg.Pool]) -> AsyncIterator[asyncpg.Pool]:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        try:
            yield pool
        finally:
            await pool.close()

    mcp = MCPServer[asyncpg.Pool]("ungoverned", lifespan=lifespan)

    @mcp.tool()
    async def query(sql: str, ctx: Context) -> dict[str, Any]:
        pool: asyncpg.Pool = ctx.request_context.lifespan_context
        async with pool.acquire() as conn:
            records = await conn.fetch(sql)
        columns = list(records[0].keys()) if records else []
        return {
            "columns": columns,
            "rows": encode_rows([tuple(r) for r in records]),
            "row_count": len(records),
        }

    return mcp


if __name__ == "__main__":
    build(sys.argv[1]).run("stdio")
