"""Settings that pass each field's check but break at run time: bounds, relations, hostile input."""

from __future__ import annotations

from pathlib import Path

import pytest

from timer_controller.errors import ConfigError
from timer_controller.setting_limits import (
    MAX_BACKOFF_S,
    MAX_FILE_BYTES,
    MAX_FLUSH_INTERVAL_S,
    MAX_LEASE_S,
    MAX_LOOKAHEAD_S,
    MAX_POLL_INTERVAL_S,
    MAX_RECONNECT_WAIT_S,
    MAX_RETENTION_S,
    MAX_SHUTDOWN_GRACE_S,
    MAX_WEBHOOK_TIMEOUT_S,
)
from timer_controller.settings import Settings, load_settings

# The variable, its maximum and the other settings that let the maximum
# itself satisfy every relation.
BOUNDED_DURATIONS = [
    ("LEASE_TIME", MAX_LEASE_S, {}),
    ("LOOKAHEAD", MAX_LOOKAHEAD_S, {"LEASE_TIME": str(MAX_LOOKAHEAD_S + 1)}),
    ("POLL_INTERVAL", MAX_POLL_INTERVAL_S, {"LEASE_TIME": "600", "LOOKAHEAD": "0"}),
    ("RETRY_BACKOFF_MAX", MAX_BACKOFF_S, {}),
    ("RETRY_BACKOFF_BASE", MAX_BACKOFF_S, {"RETRY_BACKOFF_MAX": str(MAX_BACKOFF_S)}),
    ("RECONNECT_WAIT_TIME", MAX_RECONNECT_WAIT_S, {}),
    ("FLUSH_INTERVAL", MAX_FLUSH_INTERVAL_S, {}),
    ("SHUTDOWN_GRACE", MAX_SHUTDOWN_GRACE_S, {}),
    ("WEBHOOK_TIMEOUT", MAX_WEBHOOK_TIMEOUT_S, {"LEASE_TIME": str(MAX_LEASE_S)}),
    ("RETENTION", MAX_RETENTION_S, {}),
]
NUMBER_DURATIONS = [var for var, _, _ in BOUNDED_DURATIONS if var != "RETENTION"]


@pytest.fixture(autouse=True)
def required(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, field in Settings.model_fields.items():
        for var in {name.upper(), str(field.alias or name).upper()}:
            monkeypatch.delenv(var, raising=False)
            monkeypatch.delenv(var + "_FILE", raising=False)
    monkeypatch.setenv("DB_HOST", "db.example")
    monkeypatch.setenv("DB_USER", "timer")
    monkeypatch.setenv("DB_PASSWORD", "pw")


def _error(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    text = str(caught.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("var", NUMBER_DURATIONS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", "1e13", "9" * 400])
def test_an_infinite_or_huge_duration_is_refused(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    text = _error(monkeypatch, {var: value})

    assert text.startswith(f"{var}="), text
    assert "must be" in text, text
    assert len(text) < 300, text


@pytest.mark.parametrize("value", ["inf", "1e13", "9" * 400, "99999999d", "5217w"])
def test_an_infinite_or_huge_retention_is_refused(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    text = _error(monkeypatch, {"RETENTION": value})

    assert text.startswith("RETENTION="), text
    assert len(text) < 300, text


@pytest.mark.parametrize(("var", "most_s", "others"), BOUNDED_DURATIONS)
def test_the_maximum_is_accepted_and_a_little_more_is_not(
    monkeypatch: pytest.MonkeyPatch, var: str, most_s: float, others: dict[str, str]
) -> None:
    for name, value in others.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(var, f"{most_s:f}")
    load_settings()

    text = _error(monkeypatch, {var: f"{most_s + 1:f}"})

    assert text.startswith(f"{var}="), text
    assert "must be at most" in text, text


@pytest.mark.parametrize(
    ("env", "start"),
    [
        # Each of these delivered tasks twice or more before it was refused.
        (
            {"WEBHOOK_TIMEOUT": "50", "FLUSH_INTERVAL": "10"},
            "LEASE_TIME (60s) must be greater than WEBHOOK_TIMEOUT + FLUSH_INTERVAL (60s)",
        ),
        (
            {"LEASE_TIME": "5", "FLUSH_INTERVAL": "5", "WEBHOOK_TIMEOUT": "1"},
            "LEASE_TIME (5s) must be greater than WEBHOOK_TIMEOUT + FLUSH_INTERVAL (6s)",
        ),
        (
            {"LEASE_TIME": "20", "POLL_INTERVAL": "30", "LOOKAHEAD": "0"},
            "LEASE_TIME (20s) must be greater than 3 x POLL_INTERVAL (90s)",
        ),
        (
            {"LEASE_TIME": "20", "POLL_INTERVAL": "20"},
            "LEASE_TIME (20s) must be greater than 3 x POLL_INTERVAL (60s)",
        ),
    ],
)
def test_settings_that_conflict_are_refused(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], start: str
) -> None:
    assert _error(monkeypatch, env).startswith(start)


def test_settings_close_to_each_relation_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "LEASE_TIME": "10",
        "WEBHOOK_TIMEOUT": "8",
        "FLUSH_INTERVAL": "1.9",
        "LOOKAHEAD": "9.9",
        "POLL_INTERVAL": "3.3",
    }.items():
        monkeypatch.setenv(name, value)

    assert load_settings().lease_s == 10.0


@pytest.mark.parametrize(
    "var", ["BATCH_SIZE", "RETENTION", "DB_NAME", "LOG_LEVEL", "LEASE_TIME", "ALLOWED_HOSTS"]
)
def test_a_huge_bad_value_is_not_echoed_in_full(monkeypatch: pytest.MonkeyPatch, var: str) -> None:
    text = _error(monkeypatch, {var: "x" * 2_000_000})

    assert var in text
    assert len(text) < 400, text[:500]
    assert "2000000 characters" in text


def test_control_characters_in_a_bad_value_keep_the_error_on_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = _error(monkeypatch, {"DB_NAME": "timer\nFAKE LOG LINE"})

    assert text.startswith("DB_NAME=timer\\nFAKE LOG LINE is invalid"), text


@pytest.mark.parametrize("var", ["DB_PASSWORD_FILE", "WEBHOOK_SECRET_FILE", "BATCH_SIZE_FILE"])
def test_a_file_that_is_not_utf8_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, var: str
) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"pass\xff\xfeword\n")

    text = _error(monkeypatch, {var: str(path)})

    assert text == f"{var}: {path} is not UTF-8 text (byte 4 is not valid)"


def test_a_huge_file_is_not_read_whole(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "secret"
    path.write_bytes(b"a" * (MAX_FILE_BYTES + 1))

    text = _error(monkeypatch, {"DB_PASSWORD_FILE": str(path)})

    assert text == f"DB_PASSWORD_FILE: {path} is larger than {MAX_FILE_BYTES} bytes"


@pytest.mark.parametrize("value", ["", " ", "\t \n"])
def test_a_blank_webhook_secret_is_refused(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    text = _error(monkeypatch, {"WEBHOOK_SECRET": value})

    assert text.startswith("WEBHOOK_SECRET is invalid: is set but empty"), text
    assert "unset it" in text


@pytest.mark.parametrize("content", ["", "\n", "  \n"])
def test_an_empty_webhook_secret_file_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str
) -> None:
    path = tmp_path / "webhook-secret"
    path.write_text(content, encoding="utf-8")

    text = _error(monkeypatch, {"WEBHOOK_SECRET_FILE": str(path)})

    assert text.startswith("WEBHOOK_SECRET is invalid: is set but empty"), text
