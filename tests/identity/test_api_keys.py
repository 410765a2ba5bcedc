"""Static API keys: the config hash, constant-time matching, and `bastion token new|hash`."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys

import pytest
import yaml

from server.config import ApiKeyConfig
from server.errors import ConfigError
from server.identity.api_keys import ApiKeyTable, hash_key, new_key
from server.token_cli import register


def test_a_new_key_has_256_bits_and_a_recognisable_prefix() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    assert all(key.startswith("bst_") and len(key) == 47 for key in keys)


def test_the_hash_is_sha256_of_the_key() -> None:
    assert hash_key("bst_" + "a" * 43) == "sha256:" + __import__("hashlib").sha256(b"bst_" + b"a" * 43).hexdigest()


def test_a_key_matches_its_entry_and_nothing_else() -> None:
    etl, report = new_key(), new_key()
    table = ApiKeyTable(
        [
            ApiKeyConfig(hash=hash_key(etl), agent="etl-bot", groups=("etl",)),
            ApiKeyConfig(hash=hash_key(report), agent="report-bot"),
        ]
    )
    match = table.match(etl)
    assert match is not None and (match.agent, match.groups, match.index) == ("etl-bot", ("etl",), 0)
    assert table.match(report).agent == "report-bot"  # type: ignore[union-attr]
    assert table.match(etl[:-1]) is None
    assert table.match(etl + "x") is None
    assert table.match("") is None
    assert table.match("\udcff") is None  # a lone surrogate from a broken header does not crash it


@pytest.mark.parametrize(
    ("hash_", "message"),
    [("plain-text-key", "expected sha256:"), ("sha256:ABC", "expected sha256:"), ("md5:" + "0" * 32, "expected")],
)
def test_a_configured_hash_of_the_wrong_form_stops_start_up(hash_: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ApiKeyTable([ApiKeyConfig(hash=hash_, agent="x")])


def test_a_hash_listed_twice_stops_start_up() -> None:
    digest = hash_key(new_key())
    with pytest.raises(ConfigError, match="listed twice"):
        ApiKeyTable([ApiKeyConfig(hash=digest, agent="a"), ApiKeyConfig(hash=digest, agent="b")])


def run_token(argv: list[str], stdin: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    assert args.handler(args) == 0
    return capsys.readouterr().out


def test_token_hash_reads_the_key_from_stdin_and_prints_a_config_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key = new_key()
    assert run_token(["token", "hash"], key + "\n", monkeypatch, capsys).strip() == hash_key(key)
    line = run_token(["token", "hash", "--agent", "etl-bot", "--group", "etl"], key, monkeypatch, capsys)
    assert yaml.safe_load(line) == [{"hash": hash_key(key), "agent": "etl-bot", "groups": ["etl"]}]
    assert key not in line


def test_token_new_prints_a_key_and_its_config_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_token(["token", "new", "--agent", "etl-bot"], "", monkeypatch, capsys)
    key = out.split("key:", 1)[1].split()[0]
    config = yaml.safe_load(out.split("config:", 1)[1])
    assert config == [{"hash": hash_key(key), "agent": "etl-bot", "groups": []}]
    ApiKeyTable([ApiKeyConfig(**config[0])])


@pytest.mark.parametrize(
    ("key", "message"), [("short", "at least 32"), ("has space " * 5, "whitespace"), ("", "no key")]
)
def test_token_hash_refuses_a_weak_or_empty_key(
    key: str, message: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ConfigError, match=message):
        run_token(["token", "hash"], key, monkeypatch, capsys)


def test_token_hash_as_a_process_reads_stdin() -> None:
    key = new_key()
    script = (
        "import argparse, sys; from server.token_cli import register; p = argparse.ArgumentParser(); "
        "register(p.add_subparsers(dest='c')); a = p.parse_args(['token', 'hash']); sys.exit(a.handler(a))"
    )
    done = subprocess.run([sys.executable, "-c", script], input=key, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == hash_key(key)
