"""`bastion token new|hash`: make static API keys for service agents, and the hashes to configure.

`token new` prints a fresh key (once: Bastion keeps only its hash) and the line to paste under
`identity.api_keys`. `token hash` turns an existing key into that line, reading the key from stdin
when it is piped, else from a prompt that does not echo, never from the command line, where it
would land in the shell history and in `ps`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from server.errors import ConfigError
from server.identity.api_keys import check_key_text, hash_key, new_key


def register(commands: Any) -> None:
    """Add `token` and its subcommands to the `bastion` parser."""
    token = commands.add_parser("token", help="make API keys for service agents and their config hashes")
    actions = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    for name, help_text in (
        ("new", "generate a key and print it with the config line for identity.api_keys"),
        ("hash", "read a key (stdin or a prompt) and print the config hash"),
    ):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--agent", help="the agent the key stands for (prints a whole config line)")
        action.add_argument("--group", action="append", default=[], help="a group of that agent (repeatable)")
    token.set_defaults(handler=run)


def _config_line(digest: str, agent: str | None, groups: list[str]) -> str:
    if agent is None:
        return digest
    entry = {"hash": digest, "agent": agent, "groups": groups}
    return "- " + json.dumps(entry)  # JSON is YAML: a flow mapping to paste under identity.api_keys


def _read_key() -> str:
    if sys.stdin is not None and not sys.stdin.isatty():
        lines = sys.stdin.read().splitlines()
        key = lines[0].strip() if lines else ""
        if len([line for line in lines if line.strip()]) > 1:
            raise ConfigError("expected one key on stdin, got several lines")
    else:
        key = getpass.getpass("API key (not echoed): ").strip()
    if not key:
        raise ConfigError("no key given (pipe it on stdin, or type it at the prompt)")
    return key


def run(args: argparse.Namespace) -> int:
    if args.token_command == "new":
        key = new_key()
        print(f"key:    {key}")
        print("        (give this to the agent; Bastion keeps only its hash and cannot show it again)")
        print(f"config: {_config_line(hash_key(key), args.agent or 'AGENT_NAME', args.group)}")
        return 0
    key = _read_key()
    try:
        check_key_text(key)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    print(_config_line(hash_key(key), args.agent, args.group))
    return 0
