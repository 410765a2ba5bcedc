"""Run the server on a transport.

The runtime is opened before the transport starts, so a bad DSN, a privileged role or an unwritable
state store stops `bastion serve` with one clear line instead of failing the first call.
"""

from __future__ import annotations

import anyio
import uvicorn

from server.app import build_server
from server.config import BastionConfig
from server.identity.http_auth import guard_http_app, with_resource_url


def serve(config: BastionConfig, *, transport: str, host: str = "127.0.0.1", port: int = 8000) -> None:
    anyio.run(_serve, config, transport, host, port)


async def _serve(config: BastionConfig, transport: str, host: str, port: int) -> None:
    if transport != "stdio":
        config = with_resource_url(config, host=host, port=port)
    mcp = build_server(config, transport=transport)
    async with mcp.holder.use():  # type: ignore[attr-defined]
        if transport == "stdio":
            await mcp.run_stdio_async()
            return
        if transport == "http":
            app = mcp.streamable_http_app(streamable_http_path="/mcp", host=host)
        else:
            app = mcp.sse_app(host=host)
        app = guard_http_app(app, mcp.holder)  # type: ignore[attr-defined]
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
        await server.serve()
