"""`bastion.yaml`, validated.

Unknown keys are refused with their path (`databases.main.dsnn: unknown key`), so a typo never
silently turns a limit off. Secrets may come from the environment: `${VAR}` inside any string is
replaced by that variable, and `BASTION_*` variables override the few settings an operator changes
per deployment (`BASTION_AGENT`, `BASTION_STATE_DSN`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from server.errors import ConfigError

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
DEFAULT_STATE_DSN = "sqlite:///.bastion/state.db"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatabaseConfig(_Strict):
    dsn: str
    read_only: bool = True
    statement_timeout_ms: int = Field(default=5000, gt=0, le=3_600_000)
    max_rows: int = Field(default=1000, gt=0, le=1_000_000)
    max_result_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    pool_min_size: int = Field(default=1, ge=0, le=100)
    pool_max_size: int = Field(default=10, ge=1, le=100)
    allow_privileged_role: bool = False
    #: system relations (pg_catalog.*, information_schema.*, sqlite_master...) an agent may read
    allowed_system_relations: tuple[str, ...] = ()

    @field_validator("dsn")
    @classmethod
    def _known_scheme(cls, dsn: str) -> str:
        if not dsn.startswith(("postgresql://", "postgres://", "sqlite:///")):
            raise ValueError("must start with postgresql:// or sqlite:///")
        return dsn

    @property
    def dialect(self) -> str:
        return "sqlite" if self.dsn.startswith("sqlite:") else "postgres"

    @model_validator(mode="after")
    def _pool_bounds(self) -> DatabaseConfig:
        if self.pool_min_size > self.pool_max_size:
            raise ValueError("pool_min_size must not exceed pool_max_size")
        return self


class StateConfig(_Strict):
    dsn: str = DEFAULT_STATE_DSN
    #: audit events older than this are pruned (daily), the chain kept verifiable from a checkpoint
    audit_retention_days: int | None = Field(default=None, ge=1)

    @field_validator("dsn")
    @classmethod
    def _known_scheme(cls, dsn: str) -> str:
        if not dsn.startswith(("postgresql://", "postgres://", "sqlite:///")):
            raise ValueError("must start with postgresql:// or sqlite:///")
        return dsn


class AgentConfig(_Strict):
    groups: tuple[str, ...] = ()


class UserConfig(_Strict):
    """A human (approver) known to the local command line."""

    groups: tuple[str, ...] = ()


class OAuthConfig(_Strict):
    issuer: str
    audience: str
    jwks_url: str
    agent_claim: str = "azp"
    groups_claim: str = "groups"
    groups_prefix: str | None = None
    user_claim: str = "sub"
    required_scopes: tuple[str, ...] = ()
    #: per-tool scopes on top of required_scopes, e.g. {query: [bastion:query]}
    tool_scopes: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    algorithms: tuple[str, ...] = ("RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384", "PS512", "EdDSA")
    clock_skew_s: int = Field(default=60, ge=0, le=600)
    jwks_cache_s: int = Field(default=300, ge=1)
    jwks_min_refresh_s: int = Field(default=30, ge=0)
    #: how long one JWKS fetch may take before the keys in hand are used (or the token refused)
    jwks_timeout_s: float = Field(default=3.0, gt=0, le=30)


class ApiKeyConfig(_Strict):
    hash: str
    agent: str
    groups: tuple[str, ...] = ()
    #: the scopes this key holds (for identity.oauth.required_scopes / tool_scopes); None: all of them
    scopes: tuple[str, ...] | None = None


class IdentityConfig(_Strict):
    stdio_agent: str = "local-agent"
    agents: dict[str, AgentConfig] = Field(default_factory=dict)
    users: dict[str, UserConfig] = Field(default_factory=dict)
    oauth: OAuthConfig | None = None
    api_keys: tuple[ApiKeyConfig, ...] = ()
    #: the public URL of this server's MCP endpoint (the OAuth resource); default from --host/--port
    resource_url: str | None = None


class PiiConfig(_Strict):
    """Masking: where the HMAC key comes from, the operator per entity, and column overrides."""

    #: environment variable holding the mask key (for `hash`), hex or base64, at least 32 bytes
    mask_key_env: str = "BASTION_MASK_KEY"
    #: used when the variable is unset: a key generated once into this file (mode 0600), so hashes
    #: stay stable across restarts; relative to the config file's folder
    mask_key_file: str = ".bastion/mask.key"
    default_operator: str = "hash"
    operators: dict[str, str] = Field(default_factory=dict)
    #: "schema.table.column" (or "database.schema.table.column") -> entity name or NONE
    columns: dict[str, str] = Field(default_factory=dict)
    phone_regions: tuple[str, ...] = ("US", "GB", "DE", "FR", "IT", "ES", "NL", "JP", "AU", "IN", "CA", "SG")
    sample_size: int = Field(default=100, ge=1, le=10_000)
    #: a spaCy model directory for NER on free text (PERSON, LOCATION); none by default
    ner_model: str | None = None


class ApprovalsConfig(_Strict):
    ttl_s: int = Field(default=3600, ge=10, le=7 * 24 * 3600)
    webhook: str | None = None
    #: the approver web page link put in notifications
    public_url: str | None = None


class TelemetryConfig(_Strict):
    exporter: Literal["off", "console", "otlp"] = "off"
    otlp_endpoint: str | None = None


class BastionConfig(_Strict):
    databases: dict[str, DatabaseConfig]
    state: StateConfig = StateConfig()
    identity: IdentityConfig = IdentityConfig()
    policies: str | None = None
    pii: PiiConfig = PiiConfig()
    approvals: ApprovalsConfig = ApprovalsConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    #: where relative sqlite:/// paths and the policies directory are resolved from
    base_dir: str = Field(default=".", exclude=True)

    @field_validator("databases")
    @classmethod
    def _at_least_one(cls, databases: dict[str, DatabaseConfig]) -> dict[str, DatabaseConfig]:
        if not databases:
            raise ValueError("at least one database is required")
        for name in databases:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
                raise ValueError(f"database name {name!r} must be letters, digits, '_' or '-'")
        return databases

    @property
    def default_database(self) -> str:
        return next(iter(self.databases))


def _expand_env(value: Any, path: str) -> Any:
    if isinstance(value, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"{path}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV_REF.sub(substitute, value)
    if isinstance(value, dict):
        return {k: _expand_env(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def _describe_validation_error(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        if item["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key")
        elif item["type"] == "missing":
            lines.append(f"{path}: required key is missing")
        else:
            message = item["msg"].removeprefix("Value error, ")
            lines.append(f"{path}: {message}")
    return "invalid configuration: " + "; ".join(lines)


def parse_config(data: Any, *, base_dir: str = ".") -> BastionConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("invalid configuration: the top level must be a mapping of sections")
    data = _expand_env(data, "")
    try:
        config = BastionConfig.model_validate({**data, "base_dir": base_dir})
    except ValidationError as error:
        raise ConfigError(_describe_validation_error(error)) from None
    return apply_environment(config)


def apply_environment(config: BastionConfig) -> BastionConfig:
    """`BASTION_*` overrides, applied after the file so the environment always wins."""
    updates: dict[str, Any] = {}
    if agent := os.environ.get("BASTION_AGENT"):
        updates["identity"] = config.identity.model_copy(update={"stdio_agent": agent})
    if state_dsn := os.environ.get("BASTION_STATE_DSN"):
        updates["state"] = config.state.model_copy(update={"dsn": state_dsn})
    return config.model_copy(update=updates) if updates else config


def load_config(path: str | os.PathLike[str]) -> BastionConfig:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {file} does not exist") from None
    except OSError as error:
        raise ConfigError(f"cannot read configuration file {file}: {error.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"configuration file {file} is not valid YAML{where}") from None
    return parse_config(data, base_dir=str(file.resolve().parent))


def resolve_path(config: BastionConfig, path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else Path(config.base_dir) / candidate


def sqlite_path(config: BastionConfig, dsn: str) -> Path:
    """`sqlite:///relative.db` is relative to the config file's folder; `sqlite:////abs.db` absolute."""
    return resolve_path(config, dsn.removeprefix("sqlite:///"))


def redact_dsn(dsn: str) -> str:
    """A DSN safe to print: the password replaced."""
    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", dsn)
