"""The settings, read from the environment.

``Settings`` is the controller's (the operator CLI and ``migrations/env.py``
read it too); ``WorkerSettings`` is the AMQP worker's, which never touches
the database and so needs no ``DB_*``. Both share ``_SharedSettings``: the
delivery, broker and operations settings. Any secret can also come from a
file named by ``<NAME>_FILE``, as container orchestrators pass secrets.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

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
from timer_controller.domain.durations import DAY_S, parse_duration_s
from timer_controller.domain.text import preview
from timer_controller.errors import ConfigError
from timer_controller.setting_limits import (
    MAX_BACKOFF_S,
    MAX_FILE_BYTES,
    MAX_FLUSH_INTERVAL_S,
    MAX_LEASE_S,
    MAX_LOOKAHEAD_S,
    MAX_MESSAGE_CHARS,
    MAX_POLL_INTERVAL_S,
    MAX_RECONNECT_WAIT_S,
    MAX_REQUEST_BODY_BYTES,
    MAX_RETENTION_S,
    MAX_RETRY_NUMBER,
    MAX_SHUTDOWN_GRACE_S,
    MAX_WEBHOOK_TIMEOUT_S,
    friendly,
    relation_problem,
)

FILE_SUFFIX = "_FILE"
# Fields whose values are never echoed back in an error message.
SECRET_FIELDS = frozenset({"db_password", "webhook_secret", "amqp_url", "api_tokens"})
# RFC 6750 b64token; a short token is guessable, so the api refuses one.
_API_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
API_TOKEN_MIN_CHARS = 16
# 100 years: far beyond any sane timer, well inside DATETIME's range.
MAX_API_HORIZON_S = 100 * 365 * 86400.0

DurationS = Annotated[float, BeforeValidator(parse_duration_s)]


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
            with Path(path).open("rb") as file:
                raw = file.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"{var}: cannot read {preview(path, 200)}: {exc.strerror}") from None
        if len(raw) > MAX_FILE_BYTES:
            raise ConfigError(f"{var}: {preview(path, 200)} is larger than {MAX_FILE_BYTES} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{var}: {preview(path, 200)} is not UTF-8 text (byte {exc.start} is not valid)"
            ) from None
        # Secret files conventionally end with a newline that is not part of the value.
        return text.rstrip("\r\n"), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, _, _ = self.get_field_value(field, name)
            if value is not None:
                values[field.alias if isinstance(field.alias, str) else name] = value
        return values


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``: the form logs may show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _check_amqp_url(url: str) -> None:
    # The message never repeats the URL: it may carry a password.
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        raise ValueError("not a URL such as amqp://user:password@host:5672/vhost") from None
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise ValueError("must be amqp://user:password@host:5672/vhost (or amqps://)")


class _SharedSettings(BaseSettings):
    """What the controller and the worker both need."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, populate_by_name=True)

    # Connecting (the database for the controller, the broker for both).
    retry_number: int = Field(default=10, ge=1, le=MAX_RETRY_NUMBER)
    reconnect_wait_s: float = Field(
        default=1.0, ge=0, le=MAX_RECONNECT_WAIT_S, allow_inf_nan=False, alias="reconnect_wait_time"
    )

    # Stopping, and naming this process in logs.
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, le=MAX_SHUTDOWN_GRACE_S, allow_inf_nan=False, alias="shutdown_grace"
    )
    pod_name: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=200,
        validation_alias=AliasChoices("pod_name", "hostname"),
    )

    # Delivery.
    webhook_timeout_s: float = Field(
        default=10.0, gt=0, le=MAX_WEBHOOK_TIMEOUT_S, allow_inf_nan=False, alias="webhook_timeout"
    )
    webhook_secret: SecretStr | None = None
    follow_redirects: bool = False
    block_private_networks: bool = False
    allowed_hosts: str = ""
    max_request_body_bytes: int = Field(
        default=1024 * 1024, ge=0, le=MAX_REQUEST_BODY_BYTES, alias="max_request_body"
    )

    # RabbitMQ.
    #: Required by the worker, and by the controller with DISPATCH=amqp.
    amqp_url: SecretStr | None = None
    #: Queue names start with it, so several timer systems can share a broker.
    amqp_prefix: str = Field(default="timer", pattern=r"^[A-Za-z0-9_.-]{1,100}$")

    # Operations.
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

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _blank_port_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("amqp_url", "api_tokens", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # Blank API_TOKENS is "none": the api then refuses to start, naming it.
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("webhook_secret", mode="before")
    @classmethod
    def _blank_secret_is_an_error(cls, value: Any) -> Any:
        # Taking a blank value for "unset" would silently turn signing off.
        if isinstance(value, str) and not value.strip():
            raise ValueError("is set but empty; set it to one or more whsec_ secrets, or unset it")
        return value

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

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url_parses(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_amqp_url(value.get_secret_value().strip())
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _allowed_hosts_parse(cls, value: str) -> str:
        parse_allowed_hosts(value)
        return value

    def _require_amqp_url(self, why: str) -> None:
        if self.amqp_url is None:
            raise ValueError(f"AMQP_URL is required {why} (set AMQP_URL or AMQP_URL{FILE_SUFFIX})")

    @property
    def amqp_url_redacted(self) -> str:
        """AMQP_URL without its password, for logs and messages."""
        return "" if self.amqp_url is None else redact_url(self.amqp_url.get_secret_value())

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


class Settings(_SharedSettings):
    """The controller's settings: the shared ones, the database and the loop."""

    # Database.
    db_host: str = Field(min_length=1)
    db_port: int = Field(default=3306, ge=1, le=65535)
    db_user: str = Field(min_length=1)
    db_password: SecretStr
    db_name: str = Field(default="timer_db", pattern=r"^[A-Za-z0-9_]{1,64}$")

    # Database deadlines.
    #: Whole seconds (the driver's unit): the longest any one database
    #: operation waits (connect, read, write, pool checkout, lock poll).
    db_timeout_s: int = Field(default=10, ge=3, le=3600, alias="db_timeout")

    # The loop.
    batch_size: int = Field(default=10, ge=1, le=10_000)
    poll_interval_s: float = Field(
        default=0.5, gt=0, le=MAX_POLL_INTERVAL_S, allow_inf_nan=False, alias="poll_interval"
    )
    #: None: as POLL_INTERVAL (see claim_lookahead_s).
    lookahead_s: float | None = Field(
        default=None, ge=0, le=MAX_LOOKAHEAD_S, allow_inf_nan=False, alias="lookahead"
    )
    max_in_flight: int = Field(default=100, ge=1, le=100_000)
    lease_s: float = Field(
        default=60.0, gt=0, le=MAX_LEASE_S, allow_inf_nan=False, alias="lease_time"
    )
    flush_interval_s: float = Field(
        default=0.02, gt=0, le=MAX_FLUSH_INTERVAL_S, allow_inf_nan=False, alias="flush_interval"
    )

    # Per-destination limit.
    #: Tasks one destination (scheme, host, port) may hold in this pod;
    #: None: a quarter of MAX_IN_FLIGHT (see host_limit).
    max_in_flight_per_host: int | None = Field(default=None, ge=1, le=100_000)

    # Retries.
    max_attempts: int = Field(default=3, ge=1, le=1000)
    retry_backoff_base_s: float = Field(
        default=1.0, gt=0, le=MAX_BACKOFF_S, allow_inf_nan=False, alias="retry_backoff_base"
    )
    retry_backoff_max_s: float = Field(
        default=3600.0, gt=0, le=MAX_BACKOFF_S, allow_inf_nan=False, alias="retry_backoff_max"
    )

    # Retention.
    retention_s: DurationS = Field(default=7 * DAY_S, le=MAX_RETENTION_S, alias="retention")
    cleanup_batch: int = Field(default=1000, ge=1, le=100_000)

    # Dispatch through RabbitMQ.
    #: direct: this process sends the webhooks; amqp: workers do (docs/amqp.md).
    dispatch: Literal["direct", "amqp"] = "direct"
    #: How long a task handed to the broker stays claimed (docs/amqp.md, "Leases").
    queue_lease_s: float = Field(default=600.0, gt=0, le=7 * 86400, alias="queue_lease_time")

    @field_validator("lookahead_s", "max_in_flight_per_host", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("dispatch", mode="before")
    @classmethod
    def _dispatch_lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_relations(self) -> Settings:
        problem = relation_problem(
            lease_s=self.lease_s,
            webhook_timeout_s=self.webhook_timeout_s,
            flush_interval_s=self.flush_interval_s,
            poll_interval_s=self.poll_interval_s,
            lookahead_s=self.lookahead_s,
            backoff_base_s=self.retry_backoff_base_s,
            backoff_max_s=self.retry_backoff_max_s,
        )
        if problem is not None:
            raise ValueError(problem)
        if self.dispatch == "amqp":
            self._require_amqp_url("with DISPATCH=amqp")
            if self.queue_lease_s <= self.lease_s + self.claim_lookahead_s:
                raise ValueError(
                    f"QUEUE_LEASE_TIME ({self.queue_lease_s:g}s) must be greater than "
                    f"LEASE_TIME ({self.lease_s:g}s) plus the look-ahead "
                    f"({self.claim_lookahead_s:g}s), or a queued task could not be "
                    "started before its claim ends"
                )
        return self

    @property
    def claim_lookahead_s(self) -> float:
        """LOOKAHEAD, or POLL_INTERVAL when unset (resolved by validation)."""
        return self.poll_interval_s if self.lookahead_s is None else self.lookahead_s

    @property
    def host_limit(self) -> int:
        """MAX_IN_FLIGHT_PER_HOST, or a quarter of MAX_IN_FLIGHT; never above MAX_IN_FLIGHT."""
        if self.max_in_flight_per_host is None:
            return max(1, self.max_in_flight // 4)
        return min(self.max_in_flight_per_host, self.max_in_flight)


class WorkerSettings(_SharedSettings):
    """``timer-controller worker``: the shared settings and its concurrency; no DB_*."""

    # The worker.
    #: Requests in flight at once, and the broker's prefetch for this worker.
    worker_concurrency: int = Field(default=100, ge=1, le=10_000)

    @model_validator(mode="after")
    def _check_relations(self) -> WorkerSettings:
        self._require_amqp_url("by the worker")
        return self


def load_settings(**overrides: Any) -> Settings:
    """Read and validate the controller's settings; raise ConfigError with one clear sentence."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def load_worker_settings(**overrides: Any) -> WorkerSettings:
    """Read and validate the worker's settings (no DB_*); raise ConfigError."""
    try:
        return WorkerSettings(**overrides)
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
    is_duration = field in _DURATION_ALIASES
    message = friendly(
        error["type"], error.get("ctx") or {}, is_duration=is_duration, message=message
    )
    if field in SECRET_FIELDS:
        return f"{var} is invalid: {message}"
    return f"{var}={preview(error.get('input'))} is invalid: {preview(message, MAX_MESSAGE_CHARS)}"


# Environment names (lower case, as pydantic reports them) of every duration.
_DURATION_ALIASES = frozenset(
    env_name(name, field).lower()
    for cls in (Settings, WorkerSettings)
    for name, field in cls.model_fields.items()
    if name.endswith("_s")
)
