"""Settings from the environment: exact defaults, *_FILE secrets, one clear error per bad value."""

from __future__ import annotations

import base64
import socket
from pathlib import Path
from typing import Any

import pytest

from timer_controller.errors import ConfigError
from timer_controller.settings import (
    Settings,
    WorkerSettings,
    env_name,
    load_settings,
    load_worker_settings,
    redact_url,
    require_api_tokens,
)

PASSWORD = "pw-Zq8!unmistakable-secret"
SECRET_1 = "whsec_" + base64.b64encode(b"1" * 32).decode()
SECRET_2 = "whsec_" + base64.b64encode(b"2" * 24).decode()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting leaks in from the machine running the tests."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name.upper() + "_FILE", raising=False)
    monkeypatch.delenv("HOSTNAME", raising=False)
    monkeypatch.delenv("HOSTNAME_FILE", raising=False)


@pytest.fixture
def required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db.example")
    monkeypatch.setenv("DB_USER", "timer")
    monkeypatch.setenv("DB_PASSWORD", PASSWORD)


@pytest.mark.usefixtures("required")
@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        ("db_host", "db.example"),
        ("db_user", "timer"),
        ("db_name", "timer_db"),
        ("batch_size", 10),
        ("retry_number", 10),
        ("reconnect_wait_s", 1.0),
        ("db_timeout_s", 10),
        ("db_port", 3306),
        ("poll_interval_s", 0.5),
        ("webhook_timeout_s", 10.0),
        ("lease_s", 60.0),
        ("shutdown_grace_s", 10.0),
        ("max_attempts", 3),
        ("retry_backoff_base_s", 1.0),
        ("retry_backoff_max_s", 3600.0),
        ("max_in_flight", 100),
        ("max_in_flight_per_host", None),
        ("host_limit", 25),
        ("lookahead_s", None),
        ("claim_lookahead_s", 0.5),
        ("follow_redirects", False),
        ("block_private_networks", False),
        ("allowed_hosts", ""),
        ("retention_s", 7 * 86400.0),
        ("cleanup_batch", 1000),
        ("metrics_port", None),
        ("log_format", "text"),
        ("log_level", "INFO"),
        ("webhook_secret", None),
        ("signing_keys", ()),
    ],
)
def test_defaults(attr: str, expected: Any) -> None:
    value = getattr(load_settings(), attr)

    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.usefixtures("required")
def test_pod_name_defaults_to_the_host_name() -> None:
    assert load_settings().pod_name == socket.gethostname()


@pytest.mark.usefixtures("required")
def test_password_value_is_read() -> None:
    assert load_settings().db_password.get_secret_value() == PASSWORD


@pytest.mark.usefixtures("required")
def test_empty_password_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PASSWORD", "")

    assert load_settings().db_password.get_secret_value() == ""


@pytest.mark.usefixtures("required")
@pytest.mark.parametrize(
    ("env", "attr", "expected"),
    [
        ({"BATCH_SIZE": "25"}, "batch_size", 25),
        ({"DB_PORT": "3307"}, "db_port", 3307),
        ({"DB_NAME": "Timers_2"}, "db_name", "Timers_2"),
        ({"POLL_INTERVAL": "2"}, "claim_lookahead_s", 2.0),
        ({"POLL_INTERVAL": "2", "LOOKAHEAD": ""}, "claim_lookahead_s", 2.0),
        ({"POLL_INTERVAL": "2", "LOOKAHEAD": "0"}, "claim_lookahead_s", 0.0),
        ({"LOOKAHEAD": "1.5"}, "claim_lookahead_s", 1.5),
        ({"LEASE_TIME": "11", "WEBHOOK_TIMEOUT": "10.5"}, "lease_s", 11.0),
        ({"RETENTION": "12h"}, "retention_s", 43200.0),
        ({"RETENTION": "30"}, "retention_s", 30.0),
        ({"RETENTION": "0"}, "retention_s", 0.0),
        ({"LOG_FORMAT": " JSON "}, "log_format", "json"),
        ({"LOG_LEVEL": "debug"}, "log_level", "DEBUG"),
        ({"FOLLOW_REDIRECTS": "true"}, "follow_redirects", True),
        ({"BLOCK_PRIVATE_NETWORKS": "1"}, "block_private_networks", True),
        ({"METRICS_PORT": "9100"}, "metrics_port", 9100),
        ({"METRICS_PORT": ""}, "metrics_port", None),
        ({"POD_NAME": "pod-a"}, "pod_name", "pod-a"),
        ({"HOSTNAME": "host-b"}, "pod_name", "host-b"),
        ({"MAX_ATTEMPTS": "7"}, "max_attempts", 7),
        ({"MAX_IN_FLIGHT": "1000"}, "max_in_flight", 1000),
        ({"DB_TIMEOUT": "3"}, "db_timeout_s", 3),
        ({"MAX_IN_FLIGHT_PER_HOST": "7"}, "host_limit", 7),
        ({"MAX_IN_FLIGHT_PER_HOST": ""}, "host_limit", 25),
        ({"MAX_IN_FLIGHT": "1000"}, "host_limit", 250),
        ({"MAX_IN_FLIGHT": "2"}, "host_limit", 1),
        ({"MAX_IN_FLIGHT": "10", "MAX_IN_FLIGHT_PER_HOST": "50"}, "host_limit", 10),
        ({"DB_TIMEOUT": "3600"}, "db_timeout_s", 3600),
    ],
)
def test_values_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], attr: str, expected: Any
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert getattr(load_settings(), attr) == expected


@pytest.mark.usefixtures("required")
def test_several_webhook_secrets_give_several_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SECRET", f"{SECRET_1} {SECRET_2}")

    assert load_settings().signing_keys == (b"1" * 32, b"2" * 24)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("s3cret\n", "s3cret"),
        ("s3cret\r\n", "s3cret"),
        ("s3cret", "s3cret"),
        (" p w \n", " p w "),
        ("\n", ""),
    ],
)
def test_db_password_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str, expected: str
) -> None:
    monkeypatch.setenv("DB_HOST", "db.example")
    monkeypatch.setenv("DB_USER", "timer")
    secret_file = tmp_path / "db-password"
    secret_file.write_text(content, encoding="utf-8", newline="")
    monkeypatch.setenv("DB_PASSWORD_FILE", str(secret_file))

    assert load_settings().db_password.get_secret_value() == expected


@pytest.mark.usefixtures("required")
def test_webhook_secret_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(f"{SECRET_1} {SECRET_2}\n", encoding="utf-8")
    monkeypatch.setenv("WEBHOOK_SECRET_FILE", str(secret_file))

    settings = load_settings()

    assert settings.webhook_secret is not None
    assert settings.webhook_secret.get_secret_value() == f"{SECRET_1} {SECRET_2}"
    assert settings.signing_keys == (b"1" * 32, b"2" * 24)


@pytest.mark.usefixtures("required")
@pytest.mark.parametrize("var", ["DB_PASSWORD_FILE", "WEBHOOK_SECRET_FILE"])
@pytest.mark.parametrize("target", ["missing", "directory"])
def test_unreadable_secret_file_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, var: str, target: str
) -> None:
    path = tmp_path / "nope" if target == "missing" else tmp_path
    monkeypatch.setenv(var, str(path))

    with pytest.raises(ConfigError) as caught:
        load_settings()

    message = str(caught.value)
    assert message.startswith(f"{var}: cannot read {path}: ")
    assert PASSWORD not in message


@pytest.mark.usefixtures("required")
@pytest.mark.parametrize(
    ("env", "var", "message"),
    [
        ({"BATCH_SIZE": "abc"}, "BATCH_SIZE", "BATCH_SIZE=abc is invalid: "),
        ({"BATCH_SIZE": "0"}, "BATCH_SIZE", "BATCH_SIZE=0 is invalid: "),
        ({"BATCH_SIZE": "-3"}, "BATCH_SIZE", "BATCH_SIZE=-3 is invalid: "),
        ({"BATCH_SIZE": "1.5"}, "BATCH_SIZE", "BATCH_SIZE=1.5 is invalid: "),
        (
            {"LEASE_TIME": "10"},
            "LEASE_TIME",
            "LEASE_TIME (10s) must be greater than WEBHOOK_TIMEOUT (10s)",
        ),
        (
            {"LEASE_TIME": "5"},
            "LEASE_TIME",
            "LEASE_TIME (5s) must be greater than WEBHOOK_TIMEOUT (10s)",
        ),
        (
            {"WEBHOOK_TIMEOUT": "60"},
            "WEBHOOK_TIMEOUT",
            "LEASE_TIME (60s) must be greater than WEBHOOK_TIMEOUT (60s)",
        ),
        ({"LEASE_TIME": "0"}, "LEASE_TIME", "LEASE_TIME=0 is invalid: "),
        ({"DB_HOST": ""}, "DB_HOST", "DB_HOST= is invalid: "),
        ({"DB_PORT": "70000"}, "DB_PORT", "DB_PORT=70000 is invalid: "),
        ({"DB_PORT": "0"}, "DB_PORT", "DB_PORT=0 is invalid: "),
        ({"DB_PORT": "mysql"}, "DB_PORT", "DB_PORT=mysql is invalid: "),
        ({"POLL_INTERVAL": "0"}, "POLL_INTERVAL", "POLL_INTERVAL=0 is invalid: "),
        ({"POLL_INTERVAL": "-1"}, "POLL_INTERVAL", "POLL_INTERVAL=-1 is invalid: "),
        ({"RETENTION": "abc"}, "RETENTION", "RETENTION=abc is invalid: 'abc' is not a duration"),
        ({"RETENTION": "-1d"}, "RETENTION", "RETENTION=-1d is invalid: "),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT", "LOG_FORMAT=xml is invalid: "),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL", "LOG_LEVEL=LOUD is invalid: "),
        (
            {"WEBHOOK_SECRET": "notbase64"},
            "WEBHOOK_SECRET",
            "WEBHOOK_SECRET is invalid: a secret must be 'whsec_' followed by base64",
        ),
        (
            {"WEBHOOK_SECRET": "whsec_AAAA"},
            "WEBHOOK_SECRET",
            "WEBHOOK_SECRET is invalid: a secret must decode to at least 16 bytes",
        ),
        ({"WEBHOOK_SECRET": f"{SECRET_1} oops"}, "WEBHOOK_SECRET", "WEBHOOK_SECRET is invalid: "),
        ({"DB_NAME": "timer`db"}, "DB_NAME", "DB_NAME=timer`db is invalid: "),
        ({"DB_NAME": "timer-db"}, "DB_NAME", "DB_NAME=timer-db is invalid: "),
        ({"DB_NAME": "a" * 65}, "DB_NAME", "DB_NAME=" + "a" * 65 + " is invalid: "),
        ({"MAX_ATTEMPTS": "0"}, "MAX_ATTEMPTS", "MAX_ATTEMPTS=0 is invalid: "),
        ({"MAX_IN_FLIGHT": "0"}, "MAX_IN_FLIGHT", "MAX_IN_FLIGHT=0 is invalid: "),
        ({"RETRY_NUMBER": "0"}, "RETRY_NUMBER", "RETRY_NUMBER=0 is invalid: "),
        (
            {"RECONNECT_WAIT_TIME": "-1"},
            "RECONNECT_WAIT_TIME",
            "RECONNECT_WAIT_TIME=-1 is invalid: ",
        ),
        ({"CLEANUP_BATCH": "0"}, "CLEANUP_BATCH", "CLEANUP_BATCH=0 is invalid: "),
        ({"DB_TIMEOUT": "2"}, "DB_TIMEOUT", "DB_TIMEOUT=2 is invalid: "),
        (
            {"MAX_IN_FLIGHT_PER_HOST": "0"},
            "MAX_IN_FLIGHT_PER_HOST",
            "MAX_IN_FLIGHT_PER_HOST=0 is invalid: ",
        ),
        ({"DB_TIMEOUT": "3601"}, "DB_TIMEOUT", "DB_TIMEOUT=3601 is invalid: "),
        ({"DB_TIMEOUT": "2.5"}, "DB_TIMEOUT", "DB_TIMEOUT=2.5 is invalid: "),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT", "METRICS_PORT=70000 is invalid: "),
        ({"FOLLOW_REDIRECTS": "maybe"}, "FOLLOW_REDIRECTS", "FOLLOW_REDIRECTS=maybe is invalid: "),
        (
            {"RETRY_BACKOFF_BASE": "10", "RETRY_BACKOFF_MAX": "5"},
            "RETRY_BACKOFF_MAX",
            "RETRY_BACKOFF_MAX must be at least RETRY_BACKOFF_BASE",
        ),
    ],
)
def test_invalid_value_names_the_variable_and_hides_the_password(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], var: str, message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    text = str(caught.value)
    assert text.startswith(message)
    assert var in text
    assert "\n" not in text
    assert PASSWORD not in text


@pytest.mark.parametrize("missing", ["DB_HOST", "DB_USER", "DB_PASSWORD"])
def test_missing_required_variable(monkeypatch: pytest.MonkeyPatch, missing: str) -> None:
    for name, value in {"DB_HOST": "h", "DB_USER": "u", "DB_PASSWORD": PASSWORD}.items():
        if name != missing:
            monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert str(caught.value) == (
        f"{missing} is required but not set (set {missing} or {missing}_FILE)"
    )
    assert PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    "env",
    [
        {"BATCH_SIZE": "abc"},
        {"LEASE_TIME": "1"},
        {"DB_PORT": "70000"},
        {"DB_USER": ""},
        {"WEBHOOK_SECRET": "whsec_" + PASSWORD},
    ],
)
@pytest.mark.parametrize("source", ["env", "file"])
def test_password_never_appears_in_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str], source: str
) -> None:
    monkeypatch.setenv("DB_HOST", "h")
    monkeypatch.setenv("DB_USER", "u")
    if source == "env":
        monkeypatch.setenv("DB_PASSWORD", PASSWORD)
    else:
        (tmp_path / "pw").write_text(PASSWORD + "\n", encoding="utf-8")
        monkeypatch.setenv("DB_PASSWORD_FILE", str(tmp_path / "pw"))
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert "Zq8" not in str(caught.value)
    assert "unmistakable" not in str(caught.value)
    assert caught.value.__cause__ is None, "a chained ValidationError would print the input"


@pytest.mark.usefixtures("required")
@pytest.mark.parametrize("value", ["http://api.example.com/", "10.0.0.1/8", "api.example.com:443"])
def test_invalid_allowed_hosts_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", value)

    with pytest.raises(ConfigError, match="ALLOWED_HOSTS"):
        load_settings()


AMQP_PASSWORD = "amqp-Pw9!unmistakable"
AMQP_URL = f"amqp://timer:{AMQP_PASSWORD}@broker.example:5672/timers"


@pytest.fixture
def clean_worker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, field in WorkerSettings.model_fields.items():
        monkeypatch.delenv(env_name(name, field), raising=False)
        monkeypatch.delenv(env_name(name, field) + "_FILE", raising=False)
    for name in ("DISPATCH", "QUEUE_LEASE_TIME"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("required", "clean_worker_env")
def test_dispatch_defaults_to_direct_with_no_broker() -> None:
    settings = load_settings()

    assert settings.dispatch == "direct"
    assert settings.amqp_url is None
    assert settings.amqp_prefix == "timer"
    assert settings.queue_lease_s == 600.0


@pytest.mark.usefixtures("required", "clean_worker_env")
def test_amqp_dispatch_needs_amqp_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH", "amqp")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert str(caught.value) == (
        "AMQP_URL is required with DISPATCH=amqp (set AMQP_URL or AMQP_URL_FILE)"
    )


@pytest.mark.usefixtures("required", "clean_worker_env")
def test_amqp_dispatch_with_a_url_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "amqp").write_text(AMQP_URL + "\n", encoding="utf-8")
    monkeypatch.setenv("DISPATCH", " AMQP ")
    monkeypatch.setenv("AMQP_URL_FILE", str(tmp_path / "amqp"))

    settings = load_settings()

    assert settings.dispatch == "amqp"
    assert settings.amqp_url is not None
    assert settings.amqp_url.get_secret_value() == AMQP_URL
    assert AMQP_PASSWORD not in repr(settings)


@pytest.mark.usefixtures("clean_env", "clean_worker_env")
def test_the_worker_needs_no_database_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMQP_URL", AMQP_URL)

    settings = load_worker_settings()

    assert settings.worker_concurrency == 100
    assert settings.webhook_timeout_s == 10.0
    assert settings.max_request_body_bytes == 1024 * 1024
    assert settings.amqp_prefix == "timer"
    assert not hasattr(settings, "db_host")


@pytest.mark.usefixtures("clean_env", "clean_worker_env")
def test_the_worker_needs_amqp_url() -> None:
    with pytest.raises(ConfigError) as caught:
        load_worker_settings()

    assert str(caught.value) == "AMQP_URL is required by the worker (set AMQP_URL or AMQP_URL_FILE)"


@pytest.mark.usefixtures("clean_env", "clean_worker_env")
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY=0 is invalid: "),
        ({"WORKER_CONCURRENCY": "10001"}, "WORKER_CONCURRENCY=10001 is invalid: "),
        ({"AMQP_PREFIX": "a b"}, "AMQP_PREFIX=a b is invalid: "),
        ({"AMQP_PREFIX": "x" * 101}, "AMQP_PREFIX=" + "x" * 101 + " is invalid: "),
        ({"AMQP_URL": "http://guest:" + AMQP_PASSWORD + "@h/"}, "AMQP_URL is invalid: must be "),
        ({"AMQP_URL": "amqp://u:" + AMQP_PASSWORD + "@h:99999/"}, "AMQP_URL is invalid: not a "),
        ({"WEBHOOK_TIMEOUT": "0"}, "WEBHOOK_TIMEOUT=0 is invalid: "),
    ],
)
def test_invalid_worker_setting_names_the_variable_and_hides_the_url(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    monkeypatch.setenv("AMQP_URL", AMQP_URL)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as caught:
        load_worker_settings()

    assert str(caught.value).startswith(message)
    assert AMQP_PASSWORD not in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.usefixtures("required", "clean_worker_env")
def test_queue_lease_must_outlast_lease_and_lookahead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH", "amqp")
    monkeypatch.setenv("AMQP_URL", AMQP_URL)
    monkeypatch.setenv("QUEUE_LEASE_TIME", "60.5")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert str(caught.value).startswith(
        "QUEUE_LEASE_TIME (60.5s) must be greater than LEASE_TIME (60s) plus the look-ahead (0.5s)"
    )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (AMQP_URL, "amqp://timer:***@broker.example:5672/timers"),
        ("amqps://u:p@[::1]/", "amqps://u:***@[::1]/"),
        ("amqp://127.0.0.1/", "amqp://127.0.0.1/"),
    ],
)
def test_redacted_url_hides_only_the_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# -- the api's settings --------------------------------------------------------

TOKEN_1 = "tok-Ab3.unmistakable~1"
TOKEN_2 = "tok-Zz9+unmistakable/2=="


@pytest.mark.usefixtures("required")
def test_api_defaults() -> None:
    settings = load_settings()

    assert (settings.api_host, settings.api_port) == ("0.0.0.0", 8080)
    assert settings.api_tokens is None
    assert settings.bearer_tokens == ()
    assert settings.api_max_horizon_s == 365 * 86400.0


@pytest.mark.usefixtures("required")
@pytest.mark.parametrize("source", ["env", "file"])
def test_api_tokens_are_space_separated_from_env_or_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, source: str
) -> None:
    if source == "env":
        monkeypatch.setenv("API_TOKENS", f" {TOKEN_1}  {TOKEN_2} ")
    else:
        (tmp_path / "tokens").write_text(f"{TOKEN_1} {TOKEN_2}\n", encoding="utf-8")
        monkeypatch.setenv("API_TOKENS_FILE", str(tmp_path / "tokens"))

    settings = load_settings()

    assert settings.bearer_tokens == (TOKEN_1, TOKEN_2)
    assert TOKEN_1 not in repr(settings)


@pytest.mark.usefixtures("required")
def test_require_api_tokens_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKENS", "  ")
    settings = load_settings()

    with pytest.raises(ConfigError) as caught:
        require_api_tokens(settings)

    assert str(caught.value).startswith("API_TOKENS is required but not set")
    assert "API_TOKENS_FILE" in str(caught.value)


@pytest.mark.usefixtures("required")
@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"API_PORT": "70000"}, "API_PORT=70000 is invalid: "),
        ({"API_PORT": "-1"}, "API_PORT=-1 is invalid: "),
        ({"API_PORT": "http"}, "API_PORT=http is invalid: "),
        ({"API_HOST": ""}, "API_HOST= is invalid: "),
        ({"API_MAX_HORIZON": "0"}, "API_MAX_HORIZON="),
        ({"API_MAX_HORIZON": "5300w"}, "API_MAX_HORIZON="),
        ({"API_MAX_HORIZON": "36600d"}, "API_MAX_HORIZON="),
        ({"API_TOKENS": "short"}, "API_TOKENS is invalid: token 1 is shorter than 16"),
        (
            {"API_TOKENS": f"{TOKEN_1} {TOKEN_2[:-2]}\x7f"},
            "API_TOKENS is invalid: token 2 has a character a bearer token may not have",
        ),
        (
            {"API_TOKENS": f'{TOKEN_1}"x'},
            "API_TOKENS is invalid: token 1 has a character a bearer token may not have",
        ),
    ],
)
def test_invalid_api_value_names_the_variable_and_never_a_token(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    text = str(caught.value)
    assert text.startswith(message)
    assert "unmistakable" not in text
    assert "short" not in text.removeprefix(message)
    assert "\n" not in text


@pytest.mark.usefixtures("required")
def test_api_max_horizon_takes_a_duration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_MAX_HORIZON", "30d")

    assert load_settings().api_max_horizon_s == 30 * 86400.0
