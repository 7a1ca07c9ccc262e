"""Start-up as an operator meets it: an unreachable database, bad settings, secret files.

Each error a user can cause ends the process with a known status and one line
that names what to fix; never a traceback, never the password.
"""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from tests.support.databases import TestDatabase
from tests.support.processes import Controller

EXIT_FAILED, EXIT_USAGE = 1, 2
# Distinctive, so any echo of it in the output is found.
PASSWORD = "pw-Zq7-never-printed"
SECRET_VALUE = "not-a-whsec-Kx9"
# Generous: the promise is "well under a second", but the machine is shared.
CONFIG_ERROR_DEADLINE_S = 10


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that refuses connections: bound, never listening, so nobody can take it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def finished(proc: Controller, timeout_s: float) -> tuple[int, list[str]]:
    """Exit status and non-blank output lines (stdout and stderr, in order)."""
    try:
        code = proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {timeout_s}s:\n{proc.output.text()}")
    return code, [line for line in proc.output.lines if line.strip()]


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        pytest.param("closed-port", "refused", id="refused"),
        pytest.param("unknown-host", "unknown host", id="unknown-host"),
        pytest.param("wrong-password", "access denied", id="access-denied"),
    ],
)
def test_an_unreachable_database_at_start_exits_1_after_every_try(
    target: str,
    reason: str,
    db_server: URL,
    closed_port: int,
    controllers: Callable[..., Controller],
) -> None:
    env = {
        "DB_HOST": db_server.host or "127.0.0.1",
        "DB_PORT": str(db_server.port or 3306),
        "DB_USER": db_server.username or "root",
        "DB_PASSWORD": db_server.password or "",
        "RETRY_NUMBER": "3",
        "RECONNECT_WAIT_TIME": "0.1",
    }
    if target == "closed-port":
        env.update(DB_HOST="127.0.0.1", DB_PORT=str(closed_port))
    elif target == "unknown-host":
        env.update(DB_HOST="nonexistent.invalid")
    else:
        env.update(DB_PASSWORD=PASSWORD)
    where = f"{env['DB_HOST']}:{env['DB_PORT']}"

    code, lines = finished(controllers(env), timeout_s=60)

    assert code == EXIT_FAILED, lines
    tries = [m.group(1) for line in lines if (m := re.search(r"try (\d+) of 3\b", line))]
    assert tries == ["1", "2", "3"], lines
    assert all(where in line and reason in line for line in lines if "try " in line)
    final = lines[-1]
    assert where in final, final
    assert reason in final, final
    assert "after 3 tries" in final, final
    assert sum("cannot reach" in line for line in lines) == 1, lines
    text = "\n".join(lines)
    assert "Traceback" not in text
    assert PASSWORD not in text


def _base_env(port: int) -> dict[str, str]:
    """Valid settings except for what a case overrides; the database is never reached."""
    return {
        "DB_HOST": "127.0.0.1",
        "DB_PORT": str(port),
        "DB_USER": "root",
        "DB_PASSWORD": PASSWORD,
        "RETRY_NUMBER": "1",
        "RECONNECT_WAIT_TIME": "0",
    }


INVALID_SETTINGS = [
    pytest.param({"BATCH_SIZE": "abc"}, "BATCH_SIZE", id="batch-size-not-a-number"),
    pytest.param({"BATCH_SIZE": "0"}, "BATCH_SIZE", id="batch-size-zero"),
    pytest.param(
        {"WEBHOOK_TIMEOUT": "10", "LEASE_TIME": "10"}, "LEASE_TIME", id="lease-equals-timeout"
    ),
    pytest.param(
        {"WEBHOOK_TIMEOUT": "10", "LEASE_TIME": "5"}, "LEASE_TIME", id="lease-below-timeout"
    ),
    pytest.param({"DB_HOST": None}, "DB_HOST", id="no-db-host"),
    pytest.param({"DB_HOST": ""}, "DB_HOST", id="empty-db-host"),
    pytest.param({"DB_USER": None}, "DB_USER", id="no-db-user"),
    pytest.param({"DB_PASSWORD": None}, "DB_PASSWORD", id="no-db-password"),
    pytest.param(
        {"DB_PASSWORD": None, "DB_PASSWORD_FILE": "/nonexistent/db-password"},
        "DB_PASSWORD_FILE",
        id="unreadable-password-file",
    ),
    pytest.param({"DB_PORT": "70000"}, "DB_PORT", id="db-port-out-of-range"),
    pytest.param({"DB_NAME": "timers;drop"}, "DB_NAME", id="db-name-not-an-identifier"),
    pytest.param({"POLL_INTERVAL": "-1"}, "POLL_INTERVAL", id="negative-poll-interval"),
    pytest.param({"LOOKAHEAD": "-1"}, "LOOKAHEAD", id="negative-lookahead"),
    pytest.param({"MAX_IN_FLIGHT": "0"}, "MAX_IN_FLIGHT", id="max-in-flight-zero"),
    pytest.param({"WEBHOOK_TIMEOUT": "0"}, "WEBHOOK_TIMEOUT", id="webhook-timeout-zero"),
    pytest.param({"RETRY_NUMBER": "0"}, "RETRY_NUMBER", id="retry-number-zero"),
    pytest.param(
        {"RETRY_BACKOFF_BASE": "10", "RETRY_BACKOFF_MAX": "5"},
        "RETRY_BACKOFF_MAX",
        id="backoff-max-below-base",
    ),
    pytest.param({"LOG_FORMAT": "xml"}, "LOG_FORMAT", id="log-format-xml"),
    pytest.param({"LOG_LEVEL": "chatty"}, "LOG_LEVEL", id="log-level-unknown"),
    pytest.param({"RETENTION": "forever"}, "RETENTION", id="retention-not-a-duration"),
    pytest.param({"WEBHOOK_SECRET": SECRET_VALUE}, "WEBHOOK_SECRET", id="webhook-secret-garbage"),
    pytest.param({"WEBHOOK_SECRET": ""}, "WEBHOOK_SECRET", id="webhook-secret-empty"),
    pytest.param({"WEBHOOK_SECRET": " \t"}, "WEBHOOK_SECRET", id="webhook-secret-blank"),
    pytest.param({"LEASE_TIME": "inf"}, "LEASE_TIME", id="lease-infinite"),
    pytest.param({"LOOKAHEAD": "1e13"}, "LOOKAHEAD", id="lookahead-huge"),
    pytest.param({"RETENTION": "9" * 400}, "RETENTION", id="retention-400-nines"),
    pytest.param({"FLUSH_INTERVAL": "5", "LEASE_TIME": "12"}, "FLUSH_INTERVAL", id="flush-lease"),
    pytest.param({"DB_HOST": "h", "BATCH_SIZE": "x" * 100_000}, "BATCH_SIZE", id="huge-value"),
    # Checked with the other settings, before any connection (here: to a closed port).
    pytest.param({"ALLOWED_HOSTS": "10.0.0.0/33"}, "ALLOWED_HOSTS", id="allowed-hosts-bad-cidr"),
    pytest.param(
        {"ALLOWED_HOSTS": "https://api.example.com/x"}, "ALLOWED_HOSTS", id="allowed-hosts-url"
    ),
]


@pytest.mark.parametrize(("overrides", "variable"), INVALID_SETTINGS)
def test_an_invalid_setting_exits_2_with_one_line_naming_it(
    overrides: dict[str, str | None],
    variable: str,
    closed_port: int,
    controllers: Callable[..., Controller],
) -> None:
    env = _base_env(closed_port)
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value

    code, lines = finished(controllers(env), timeout_s=CONFIG_ERROR_DEADLINE_S)

    assert code == EXIT_USAGE, lines
    assert len(lines) == 1, lines
    assert variable in lines[0], lines
    assert lines[0].startswith("timer-controller: configuration error: "), lines
    assert "Traceback" not in lines[0]
    assert PASSWORD not in lines[0]
    assert SECRET_VALUE not in lines[0]
    assert len(lines[0]) < 400, "a long value is echoed cut"


def test_db_password_file_supplies_the_password(
    db: TestDatabase, tmp_path: Path, controllers: Callable[..., Controller]
) -> None:
    password_file = tmp_path / "db_password"
    # root's password is empty: the file holds just the conventional newline.
    password_file.write_text((db.url.password or "") + "\n", encoding="utf-8")
    env = db.env(DB_PASSWORD_FILE=str(password_file))
    del env["DB_PASSWORD"]

    pod = controllers(env)
    pod.wait_started()
    pod.terminate()
    assert pod.wait(30) == 0, pod.output.text()


def test_db_password_file_is_what_the_controller_logs_in_with(
    db: TestDatabase, tmp_path: Path, controllers: Callable[..., Controller]
) -> None:
    password_file = tmp_path / "db_password"
    password_file.write_text(PASSWORD + "\n", encoding="utf-8")
    env = db.env(DB_PASSWORD_FILE=str(password_file), RETRY_NUMBER="1")
    del env["DB_PASSWORD"]

    code, lines = finished(controllers(env), timeout_s=60)

    assert code == EXIT_FAILED, lines
    assert "access denied" in lines[-1], lines
    assert PASSWORD not in "\n".join(lines)


def test_a_metrics_port_in_use_exits_2_with_one_line_naming_it(
    db: TestDatabase, controllers: Callable[..., Controller]
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]

        code, lines = finished(controllers(db.env(METRICS_PORT=str(port))), timeout_s=60)

    assert code == EXIT_USAGE, lines
    problems = [line for line in lines if "METRICS_PORT" in line]
    assert len(problems) == 1, lines
    assert f"METRICS_PORT={port}" in problems[0]
    assert "taken" in problems[0]
    assert not any("Traceback" in line for line in lines), lines
