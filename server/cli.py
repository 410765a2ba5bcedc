"""The `bastion` command.

Every subcommand reports failure as one readable line on stderr and a non-zero exit; a traceback
is a bug. Configuration comes from `--config`, else `BASTION_CONFIG`, else `./bastion.yaml`, else the
embedded demo.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from server import __version__
from server.config import BastionConfig, load_config
from server.errors import BastionError

log = logging.getLogger("bastion")

DEMO_DIR = Path(".bastion")


def resolve_config(path: str | None) -> tuple[BastionConfig, bool]:
    """The configuration to use, and whether it is the embedded demo."""
    chosen = path or os.environ.get("BASTION_CONFIG")
    if not chosen and Path("bastion.yaml").exists():
        chosen = "bastion.yaml"
    if chosen:
        return load_config(chosen), False
    from server.demo.config import demo_config
    from server.demo.seed import build_demo_database, demo_database_path

    if not demo_database_path(DEMO_DIR).exists():
        build_demo_database(demo_database_path(DEMO_DIR))
    return demo_config(DEMO_DIR), True


def _cmd_serve(args: argparse.Namespace) -> int:
    from server.serve import serve

    config, is_demo = resolve_config(args.config)
    if is_demo:
        print("bastion: no configuration given; serving the embedded demo database", file=sys.stderr)
    serve(config, transport=args.transport, host=args.host, port=args.port)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from server.demo.session import run_demo

    return asyncio.run(run_demo(DEMO_DIR, rebuild=not args.keep))


#: modules that add their own subcommands: each has `register(commands)`, whose handlers take the
#: parsed arguments and may call `resolve_config(args.config)`
_COMMAND_MODULES: tuple[str, ...] = (
    "server.audit_cli",
    "server.policy_cli",
    "server.eval_cli",
    "server.token_cli",
    "server.catalog_cli",
    "server.approvals_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bastion", description="Governed database access for AI agents, over MCP.")
    parser.add_argument("--version", action="version", version=f"bastion {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (to stderr)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="build the demo database and run a scripted agent session")
    demo.add_argument("--keep", action="store_true", help="reuse an existing demo database and audit trail")
    demo.set_defaults(handler=_cmd_demo)

    serve = commands.add_parser("serve", help="run the MCP server")
    serve.add_argument("--config", help="bastion.yaml (default: $BASTION_CONFIG, ./bastion.yaml, the demo)")
    serve.add_argument("--transport", choices=("stdio", "http", "sse"), default="stdio")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP/SSE bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="HTTP/SSE port (default 8000)")
    serve.set_defaults(handler=_cmd_serve)

    import importlib

    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except BastionError as error:
        print(f"bastion: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the last line of defence: one line, never a traceback
        log.debug("unexpected error", exc_info=True)
        print(f"bastion: unexpected {type(error).__name__}; run with -v for details", file=sys.stderr)
        if args.verbose:
            logging.getLogger("bastion").exception("details")
        return 1
