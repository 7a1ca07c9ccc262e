"""The one settings object, read from the environment.

The controller, the operator CLI and ``migrations/env.py`` all read it.
Any secret can also come from a file named by ``<NAME>_FILE``, as container
orchestrators pass secrets.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from timer_controller.delivery.policy import parse_allowed_hosts
from timer_controller.delivery.signing import decode_secret
from timer_controller.domain.durations import parse_duration_s

FILE_SUFFIX = "_FILE"
# Fields whose values are never echoed back in an error message.
SECRET_FIELDS = frozenset({"db_password", "webhook_secret", "api_tokens"})
# RFC 6750 b64token; a short token is guessable, so the api refuses one.
_API_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
API_TOKEN_MIN_CHARS = 16
# 100 years: far beyond any sane timer, well inside DATETIME's range.
MAX_API_HORIZON_S = 100 * 365 * 86400.0

DurationS = Annotated[float, BeforeValidator(parse_duration_s)]


class ConfigError(Exception):
    """A setting is missing or invalid; the message names the variable."""


def env_name(field_name: str, field: FieldInfo) -> str:
    """The environment variable of a field: its alias (the name without units) or its name."""
    alias = field.alias if isinstance(field.alias, str) else field_name
    return alias.upper()


class _FileSecretsSource(PydanticBaseSettingsSource):
    """``DB_PASSWORD_FILE=/run/secrets/db`` supplies ``DB_PASSWORD``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: dict[str, str]) -> None:
        super().__init__(settings_cls)
        self._environ = environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        var = env_name(field_name, field) + FILE_SUFFIX
        path = self._environ.get(var)
        if path is None:
            return None, field_name, False
        try:
            # Secret files conventionally end with a newline that is not part of the value.
            return Path(path).read_text(encoding="utf-8").rstrip("\r\n"), field_name, False
        except OSError as exc:
            raise ConfigError(f"{var}: cannot read {path}: {exc.strerror}") from None

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, name)
            if value is not None:
                values[field.alias if isinstance(field.alias, str) else name] = value
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, populate_by_name=True)

    # Database.
    db_host: str = Field(min_length=1)
    db_port: int = Field(default=3306, ge=1, le=65535)
    db_user: str = Field(min_length=1)
    db_password: SecretStr
    db_name: str = Field(default="timer_db", pattern=r"^[A-Za-z0-9_]{1,64}$")
    retry_number: int = Field(default=10, ge=1)
    reconnect_wait_s: float = Field(default=1.0, ge=0, alias="reconnect_wait_time")

    # The loop.
    batch_size: int = Field(default=10, ge=1, le=10_000)
    poll_interval_s: float = Field(default=0.5, gt=0, alias="poll_interval")
    #: None: as POLL_INTERVAL (see claim_lookahead_s).
    lookahead_s: float | None = Field(default=None, ge=0, alias="lookahead")
    max_in_flight: int = Field(default=100, ge=1, le=100_000)
    lease_s: float = Field(default=60.0, gt=0, alias="lease_time")
    shutdown_grace_s: float = Field(default=10.0, ge=0, alias="shutdown_grace")
    flush_interval_s: float = Field(default=0.02, gt=0, alias="flush_interval")
    pod_name: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=200,
        validation_alias=AliasChoices("pod_name", "hostname"),
    )

    # Delivery.
    webhook_timeout_s: float = Field(default=10.0, gt=0, alias="webhook_timeout")
    max_attempts: int = Field(default=3, ge=1, le=1000)
    retry_backoff_base_s: float = Field(default=1.0, gt=0, alias="retry_backoff_base")
    retry_backoff_max_s: float = Field(default=3600.0, gt=0, alias="retry_backoff_max")
    webhook_secret: SecretStr | None = None
    follow_redirects: bool = False
    block_private_networks: bool = False
    allowed_hosts: str = ""
    max_request_body_bytes: int = Field(default=1024 * 1024, ge=0, alias="max_request_body")

    # Operations.
    retention_s: DurationS = Field(default=7 * 86400.0, alias="retention")
    cleanup_batch: int = Field(default=1000, ge=1, le=100_000)
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    # The HTTP API (``timer-controller api``).
    api_host: str = Field(default="0.0.0.0", min_length=1)
    #: 0 picks a free port (the api logs the one it got).
    api_port: int = Field(default=8080, ge=0, le=65535)
    #: Space-separated bearer tokens; required by ``timer-controller api`` only.
    api_tokens: SecretStr | None = None
    #: A timer may be due at most this far ahead.
    api_max_horizon_s: DurationS = Field(
        default=365 * 86400.0, gt=0, le=MAX_API_HORIZON_S, alias="api_max_horizon"
    )

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("metrics_port", "lookahead_s", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("webhook_secret", "api_tokens", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_tokens")
    @classmethod
    def _tokens_well_formed(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for index, token in enumerate(value.get_secret_value().split(), start=1):
                if not _API_TOKEN.fullmatch(token):
                    raise ValueError(
                        f"token {index} has a character a bearer token may not have "
                        "(use letters, digits and -._~+/)"
                    )
                if len(token) < API_TOKEN_MIN_CHARS:
                    raise ValueError(
                        f"token {index} is shorter than {API_TOKEN_MIN_CHARS} characters"
                    )
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _secrets_decode(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            for secret in value.get_secret_value().split():
                decode_secret(secret)
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts_parse(cls, value: str) -> str:
        parse_allowed_hosts(value)
        return value

    @model_validator(mode="after")
    def _check_relations(self) -> Settings:
        if self.lease_s <= self.webhook_timeout_s:
            raise ValueError(
                f"LEASE_TIME ({self.lease_s:g}s) must be greater than "
                f"WEBHOOK_TIMEOUT ({self.webhook_timeout_s:g}s), or a slow request "
                "would outlive its claim and fire twice"
            )
        if self.retry_backoff_max_s < self.retry_backoff_base_s:
            raise ValueError("RETRY_BACKOFF_MAX must be at least RETRY_BACKOFF_BASE")
        return self

    @property
    def claim_lookahead_s(self) -> float:
        """LOOKAHEAD, or POLL_INTERVAL when unset (resolved by validation)."""
        return self.poll_interval_s if self.lookahead_s is None else self.lookahead_s

    @property
    def bearer_tokens(self) -> tuple[str, ...]:
        if self.api_tokens is None:
            return ()
        return tuple(self.api_tokens.get_secret_value().split())

    @property
    def signing_keys(self) -> tuple[bytes, ...]:
        if self.webhook_secret is None:
            return ()
        return tuple(decode_secret(s) for s in self.webhook_secret.get_secret_value().split())

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            EnvSettingsSource(settings_cls, case_sensitive=False),
            _FileSecretsSource(settings_cls, dict(os.environ)),
        )


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the settings; raise ConfigError with one clear sentence."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def require_api_tokens(settings: Settings) -> None:
    """The api serves nobody without a token: raise ConfigError when none is set."""
    if not settings.bearer_tokens:
        raise ConfigError(
            "API_TOKENS is required but not set (set API_TOKENS or API_TOKENS_FILE "
            "to one or more space-separated bearer tokens)"
        )


def describe_validation_error(exc: ValidationError) -> str:
    """One line for the first problem, naming the variable, never a secret."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    message = str(error["msg"]).removeprefix("Value error, ")
    if not loc:
        return message
    field = loc[0]
    var = field.upper()
    if error["type"] == "missing":
        return f"{var} is required but not set (set {var} or {var}{FILE_SUFFIX})"
    if field in SECRET_FIELDS:
        return f"{var} is invalid: {message}"
    return f"{var}={error.get('input')!s} is invalid: {message}"
