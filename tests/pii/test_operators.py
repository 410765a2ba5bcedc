"""Masking operators and the mask key: deterministic hashes, clear start-up errors, a registry."""

from __future__ import annotations

import base64
import hmac
import os
import re
import stat
from pathlib import Path

import pytest

from server.config import PiiConfig, parse_config
from server.errors import ConfigError
from server.pii.keys import MaskKey, load_mask_key
from server.pii.operators import (
    HashOperator,
    Operator,
    OperatorSet,
    UnknownOperator,
    get_operator,
    operator_names,
    register_operator,
    validate_pii_config,
)

KEY_HEX = "ab" * 32
HASHED = re.compile(r"^email:[0-9a-f]{10}$")


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BASTION_MASK_KEY", raising=False)


def hash_of(value: object, config: PiiConfig, base_dir: Path) -> str | None:
    """A fresh key load and a fresh operator, as after a restart."""
    return get_operator("hash", load_mask_key(config, str(base_dir))).mask(value, "EMAIL_ADDRESS")


def test_hash_is_an_entity_label_and_ten_hex_digits_of_hmac_sha256(tmp_path: Path) -> None:
    key = MaskKey(bytes.fromhex(KEY_HEX), "test")
    masked = HashOperator(key).mask("ada@example.com", "EMAIL_ADDRESS")
    assert HASHED.match(masked)
    expected = hmac.new(bytes.fromhex(KEY_HEX), b"ada@example.com", "sha256").hexdigest()[:10]
    assert masked == f"email:{expected}"


def test_hash_is_stable_across_a_restart_with_a_generated_key_file(tmp_path: Path) -> None:
    config = PiiConfig()
    first = hash_of("ada@example.com", config, tmp_path)
    key_file = tmp_path / ".bastion" / "mask.key"
    assert key_file.exists()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert hash_of("ada@example.com", config, tmp_path) == first


def test_hash_is_stable_across_a_restart_with_a_key_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BASTION_MASK_KEY", KEY_HEX)
    config = PiiConfig()
    first = hash_of("ada@example.com", config, tmp_path)
    assert hash_of("ada@example.com", config, tmp_path) == first
    assert not (tmp_path / ".bastion" / "mask.key").exists()  # the environment wins; no file made
    monkeypatch.setenv("BASTION_MASK_KEY", base64.b64encode(bytes.fromhex(KEY_HEX)).decode())
    assert hash_of("ada@example.com", config, tmp_path) == first  # the same key written in base64


def test_different_keys_give_different_hashes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_MASK_KEY", KEY_HEX)
    one = hash_of("ada@example.com", PiiConfig(), tmp_path)
    monkeypatch.setenv("BASTION_MASK_KEY", "cd" * 32)
    assert hash_of("ada@example.com", PiiConfig(), tmp_path) != one


def test_hash_joins_across_types_and_tells_values_apart() -> None:
    operator = HashOperator(MaskKey(os.urandom(32), "test"))
    assert operator.mask("42", None) == operator.mask(42, None)
    assert operator.mask("ada@example.com", "EMAIL_ADDRESS") != operator.mask("bob@example.com", "EMAIL_ADDRESS")
    assert operator.mask(b"\xff\xfe raw", None).startswith("pii:")


def test_an_invalid_key_in_the_environment_is_named_but_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "not-a-key-but-a-password-somebody-typed"
    monkeypatch.setenv("MY_MASK_KEY", secret)
    with pytest.raises(ConfigError) as raised:
        load_mask_key(PiiConfig(mask_key_env="MY_MASK_KEY"), str(tmp_path))
    assert "MY_MASK_KEY" in str(raised.value) and "pii.mask_key_env" in str(raised.value)
    assert secret not in str(raised.value)


def test_a_key_shorter_than_32_bytes_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_MASK_KEY", "ab" * 16)
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        load_mask_key(PiiConfig(), str(tmp_path))


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "mask.key"
    key_file.write_text(KEY_HEX)
    key_file.chmod(0o644)
    with pytest.raises(ConfigError, match="accessible by other users") as raised:
        load_mask_key(PiiConfig(mask_key_file=str(key_file)), str(tmp_path))
    assert KEY_HEX not in str(raised.value)


def test_a_corrupt_key_file_is_refused_with_its_path(tmp_path: Path) -> None:
    key_file = tmp_path / "mask.key"
    key_file.write_text("short")
    key_file.chmod(0o600)
    with pytest.raises(ConfigError, match=re.escape(str(key_file))):
        load_mask_key(PiiConfig(mask_key_file="mask.key"), str(tmp_path))


def test_the_key_never_appears_in_repr() -> None:
    key = MaskKey(bytes.fromhex(KEY_HEX), "test")
    assert KEY_HEX not in repr(key) and "\\xab" not in repr(key)
    assert len(key.key_id) == 12


@pytest.mark.parametrize(
    ("pii", "path"),
    [
        ({"operators": {"EMAIL_ADDRESS": "hsah"}}, "pii.operators.EMAIL_ADDRESS"),
        ({"default_operator": "scramble"}, "pii.default_operator"),
        ({"operators": {"EMAIL": "hash"}}, "pii.operators.EMAIL"),
        ({"columns": {"sales.leads.f3": "PHONE"}}, "pii.columns.sales.leads.f3"),
        ({"columns": {"leads.f3": "PHONE_NUMBER"}}, "pii.columns.leads.f3"),
    ],
)
def test_unknown_operators_and_entities_in_config_name_the_key(pii: dict[str, object], path: str) -> None:
    config = parse_config({"databases": {"main": {"dsn": "sqlite:///x.db"}}, "pii": pii})
    with pytest.raises(ConfigError, match=re.escape(path)):
        validate_pii_config(config.pii)


def test_valid_overrides_and_operators_pass() -> None:
    validate_pii_config(
        PiiConfig(
            operators={"PHONE_NUMBER": "partial", "US_SSN": "null"},
            columns={"sales.leads.f3": "PHONE_NUMBER", "main.web.sessions.token_id": "NONE"},
        )
    )


def test_partial_keeps_the_last_four_and_stars_short_values_entirely() -> None:
    partial = get_operator("partial", MaskKey(os.urandom(32), "test"))
    assert partial.mask("4111 1111 1111 1234", "CREDIT_CARD") == "************1234"
    assert partial.mask("+44 20 7946 0958", "PHONE_NUMBER") == "************0958"
    assert partial.mask("ab12", None) == "****"
    assert partial.mask("x" * 1000 + "tail", None) == "*" * 12 + "tail"


def test_redact_says_what_was_there_and_null_removes_it() -> None:
    key = MaskKey(os.urandom(32), "test")
    assert get_operator("redact", key).mask("ada@example.com", "EMAIL_ADDRESS") == "[EMAIL_ADDRESS]"
    assert get_operator("redact", key).mask("x", None) == "[REDACTED]"
    assert get_operator("null", key).mask("ada@example.com", "EMAIL_ADDRESS") is None
    assert get_operator("null", key).mask_span("ada@example.com", "EMAIL_ADDRESS") == "[EMAIL_ADDRESS]"


def test_new_operators_are_registered_by_name() -> None:
    class Reverse(Operator):
        name = "reverse_for_test"

        def mask(self, value: object, entity: str | None) -> str:
            return str(value)[::-1]

    register_operator("reverse_for_test", lambda key: Reverse(), replace=True)
    assert "reverse_for_test" in operator_names()
    assert get_operator("reverse_for_test", MaskKey(os.urandom(32), "t")).mask("abc", None) == "cba"
    with pytest.raises(ValueError, match="already registered"):
        register_operator("hash", lambda key: Reverse())
    with pytest.raises(UnknownOperator):
        get_operator("no_such_operator", MaskKey(os.urandom(32), "t"))


def test_operator_set_uses_the_entitys_operator_else_the_default() -> None:
    operators = OperatorSet(PiiConfig(operators={"PHONE_NUMBER": "partial"}), MaskKey(os.urandom(32), "t"))
    assert operators.for_entity("PHONE_NUMBER").name == "partial"
    assert operators.for_entity("EMAIL_ADDRESS").name == "hash"
    assert operators.for_entity(None).name == "hash"
