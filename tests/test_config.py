"""bastion.yaml: validated, unknown keys refused with their path, secrets from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import load_config, parse_config, redact_dsn
from server.errors import ConfigError

MINIMAL = {"databases": {"main": {"dsn": "postgresql://app@127.0.0.1:5432/app"}}}


def test_the_first_database_is_the_default_and_limits_have_defaults() -> None:
    config = parse_config({"databases": {"b": {"dsn": "sqlite:///b.db"}, "a": {"dsn": "sqlite:///a.db"}}})
    assert config.default_database == "b"
    assert config.databases["b"].max_rows == 1000 and config.databases["b"].statement_timeout_ms == 5000
    assert config.state.dsn == "sqlite:///.bastion/state.db"


def test_an_unknown_key_is_refused_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r"databases\.main\.max_rowz: unknown key"):
        parse_config({"databases": {"main": {"dsn": "sqlite:///x.db", "max_rowz": 5}}})


def test_a_bad_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"databases\.main\.statement_timeout_ms"):
        parse_config({"databases": {"main": {"dsn": "sqlite:///x.db", "statement_timeout_ms": -1}}})
    with pytest.raises(ConfigError, match=r"databases\.main\.dsn: must start with"):
        parse_config({"databases": {"main": {"dsn": "mysql://x"}}})


def test_databases_are_required() -> None:
    with pytest.raises(ConfigError, match="databases: required key is missing"):
        parse_config({})


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_DB_PASSWORD", "s3cret")
    config = parse_config({"databases": {"main": {"dsn": "postgresql://app:${APP_DB_PASSWORD}@db/app"}}})
    assert config.databases["main"].dsn == "postgresql://app:s3cret@db/app"
    assert redact_dsn(config.databases["main"].dsn) == "postgresql://app:***@db/app"


def test_a_missing_environment_variable_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_NOT_SET", raising=False)
    with pytest.raises(ConfigError, match=r"databases\.main\.dsn: environment variable NOPE_NOT_SET"):
        parse_config({"databases": {"main": {"dsn": "postgresql://app:${NOPE_NOT_SET}@db/app"}}})


def test_bastion_agent_overrides_the_stdio_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_AGENT", "from-env")
    config = parse_config({**MINIMAL, "identity": {"stdio_agent": "from-file"}})
    assert config.identity.stdio_agent == "from-env"


def test_invalid_yaml_says_where(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    path.write_text("databases:\n  main: {dsn: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(path)


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
