"""What a real controller process prints: JSON lines, levels, and no secrets.

Secrets get a distinctive value each (a real database user with a password,
a webhook secret, a marker in a request body), and the whole output is
searched for them.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text

from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.waiting import wait_until

Start = Callable[..., Controller]
OUTCOME_EVENTS = frozenset({"done", "failed", "retry"})
LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})
FAST_RETRIES = {"MAX_ATTEMPTS": "2", "RETRY_BACKOFF_BASE": "0.1", "RETRY_BACKOFF_MAX": "0.2"}


def refused_url() -> str:
    """A local port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/refused"


def insert_task(
    db: TestDatabase, url: str, *, method: str | None = None, body: str | None = None
) -> int:
    with db.engine.begin() as conn:
        result = conn.execute(
            text(
                "INSERT INTO tasks (url, due_at, method, body) "
                "VALUES (:url, UTC_TIMESTAMP(6), :method, :body)"
            ),
            {"url": url, "method": method, "body": body},
        )
        return int(result.lastrowid)


def insert_tasks(db: TestDatabase, url: str, n: int) -> list[int]:
    return [insert_task(db, url) for _ in range(n)]


def wait_all_finished(db: TestDatabase, ids: list[int]) -> None:
    def finished() -> bool:
        with db.engine.connect() as conn:
            n = conn.execute(
                text("SELECT COUNT(*) FROM tasks WHERE status IN ('done', 'failed')")
            ).scalar_one()
        return int(n) == len(ids)

    wait_until(finished, timeout_s=60, what=f"all {len(ids)} tasks finished")


def stop_cleanly(proc: Controller) -> str:
    proc.terminate()
    assert proc.wait(30) == 0, proc.output.text()
    return proc.output.text()


def parse_json_lines(output: str) -> list[dict[str, Any]]:
    """Every line must be one JSON object; fails naming the first that is not."""
    entries: list[dict[str, Any]] = []
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


def test_json_logs_are_one_object_per_line_with_event_fields(
    db: TestDatabase, receiver: Receiver, controllers: Start
) -> None:
    pod = f"pod-{secrets.token_hex(4)}"
    proc = controllers(db.env(LOG_FORMAT="json", POD_NAME=pod, **FAST_RETRIES))
    proc.wait_started()
    ok = insert_tasks(db, receiver.url("/ok"), 3)
    gone = insert_tasks(db, receiver.url("/status/404"), 2)
    (busy,) = insert_tasks(db, receiver.url("/status/503"), 1)
    (refused,) = insert_tasks(db, refused_url(), 1)
    wait_all_finished(db, [*ok, *gone, busy, refused])
    entries = parse_json_lines(stop_cleanly(proc))

    assert entries
    for entry in entries:
        assert {"time", "level", "event", "pod"} <= entry.keys(), entry
        assert entry["pod"] == pod
        assert entry["level"] in LEVELS
        assert datetime.fromisoformat(entry["time"]).utcoffset() is not None
    assert {"started", "stopped"} <= {e["event"] for e in entries}

    outcomes: dict[int, list[dict[str, Any]]] = {}
    for entry in entries:
        if entry["event"] in OUTCOME_EVENTS:
            assert isinstance(entry["task_id"], int), entry
            assert isinstance(entry["attempt"], int), entry
            assert isinstance(entry["outcome"], str), entry
            assert entry.get("status_code") is not None or entry.get("error"), entry
            outcomes.setdefault(entry["task_id"], []).append(entry)

    def summary(task_id: int) -> list[tuple[Any, ...]]:
        return [
            (e["event"], e["attempt"], e["outcome"], e["status_code"])
            for e in outcomes.get(task_id, [])
        ]

    for task_id in ok:
        assert summary(task_id) == [("done", 1, "success", 200)]
    for task_id in gone:
        assert summary(task_id) == [("failed", 1, "final_status", 404)]
        assert outcomes[task_id][0]["level"] == "warning"
    assert summary(busy) == [
        ("retry", 1, "retryable_status", 503),
        ("failed", 2, "retryable_status", 503),
    ]
    assert summary(refused) == [
        ("retry", 1, "connect_error", None),
        ("failed", 2, "connect_error", None),
    ]
    assert all(e["error"] == "connection refused" for e in outcomes[refused])
    assert outcomes.keys() == {*ok, *gone, busy, refused}

    claimed: list[int] = []
    for entry in entries:
        if entry["event"] == "claimed":
            assert isinstance(entry["task_ids"], list), entry
            assert all(isinstance(i, int) for i in entry["task_ids"]), entry
            claimed += entry["task_ids"]
    # Each attempt is one claim: the retried tasks were claimed twice.
    assert sorted(claimed) == sorted([*ok, *gone, busy, busy, refused, refused])


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_level_warning_drops_done_lines_but_keeps_failures(
    db: TestDatabase, receiver: Receiver, controllers: Start, log_format: str
) -> None:
    proc = controllers(db.env(LOG_FORMAT=log_format, LOG_LEVEL="WARNING"))
    ok = insert_tasks(db, receiver.url("/ok"), 3)
    gone = insert_tasks(db, receiver.url("/status/404"), 2)
    # No "started" line to wait for at WARNING: the rows say when it ran.
    wait_all_finished(db, ok + gone)
    output = stop_cleanly(proc)
    assert receiver.stats()["count"] == len(ok) + len(gone)

    if log_format == "json":
        entries = parse_json_lines(output)
        assert all(e["level"] in ("warning", "error", "critical") for e in entries), entries
        assert not [e for e in entries if e["event"] in ("done", "claimed", "started")]
        failed = sorted(e["task_id"] for e in entries if e["event"] == "failed")
    else:
        lines = output.splitlines()
        # "%(asctime)s %(levelname)s …": the date, the time, then the level.
        assert all(line.split()[2] in ("WARNING", "ERROR", "CRITICAL") for line in lines), lines
        assert not re.search(r"task \d+ done", output)
        assert "claimed" not in output
        failed = sorted(int(m) for m in re.findall(r"task (\d+) failed: HTTP 404", output))
    assert failed == gone


@dataclass(frozen=True)
class DbUser:
    name: str
    password: str


@pytest.fixture
def db_user(db: TestDatabase) -> Iterator[DbUser]:
    """A real database user with a distinctive password, allowed on the test database."""
    user = DbUser(f"tc_{secrets.token_hex(4)}", f"Pw-{secrets.token_hex(8)}-Zq")
    with db.engine.begin() as conn:
        conn.execute(text(f"CREATE USER '{user.name}'@'%' IDENTIFIED BY '{user.password}'"))
        conn.execute(text(f"GRANT ALL ON `{db.name}`.* TO '{user.name}'@'%'"))
    try:
        yield user
    finally:
        with db.engine.begin() as conn:
            conn.execute(text(f"DROP USER IF EXISTS '{user.name}'@'%'"))


def connections_of(db: TestDatabase, user: str) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = :u"),
                {"u": user},
            ).scalar_one()
        )


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_secrets_and_request_bodies_never_appear_in_the_output(
    db: TestDatabase, db_user: DbUser, controllers: Start, log_format: str
) -> None:
    key = f"KEY-{secrets.token_hex(12)}".encode()
    webhook_secret = "whsec_" + base64.b64encode(key).decode()
    marker = f"BODY-MARKER-{secrets.token_hex(8)}"
    body = json.dumps({"marker": marker, "card": "4111 1111 1111 1111"})
    receiver = Receiver("--secret", webhook_secret, "--full")
    try:
        env = db.env(
            DB_USER=db_user.name,
            DB_PASSWORD=db_user.password,
            WEBHOOK_SECRET=webhook_secret,
            LOG_FORMAT=log_format,
            LOG_LEVEL="DEBUG",  # the most the process will ever say
            **FAST_RETRIES,
        )
        proc = controllers(env)
        proc.wait_started()
        assert connections_of(db, db_user.name) > 0  # it really runs as that user
        ids = [
            insert_task(db, receiver.url("/ok"), body=body),
            insert_task(db, receiver.url("/status/404"), body=body),
            insert_task(db, receiver.url("/status/503"), body=body),
            insert_task(db, receiver.url("/ok"), method="PUT", body=body),
            # Refused before sending: a GET cannot carry a body.
            insert_task(db, receiver.url("/ok"), method="GET", body=body),
        ]
        wait_all_finished(db, ids)
        output = stop_cleanly(proc)
        records = receiver.records()
    finally:
        receiver.stop()

    # The secrets were used: every delivery carried the body and verified.
    assert len(records) == 5  # /ok, 404, 503 twice, PUT
    assert all(marker in rec["body"] for rec in records)
    assert all(rec["verified"] is True for rec in records)
    assert "failed" in output  # failures were logged, so there was something to leak
    for secret in (
        db_user.password,
        webhook_secret,
        webhook_secret.removeprefix("whsec_"),
        key.decode(),
        marker,
        "4111 1111",
    ):
        assert secret not in output, f"{secret!r} leaked into the output"


@pytest.mark.parametrize(
    ("case", "extra_env"),
    [
        ("config error", {"BATCH_SIZE": "abc"}),
        ("access denied", {"RETRY_NUMBER": "1", "RECONNECT_WAIT_TIME": "0"}),
    ],
)
def test_a_failed_start_does_not_print_the_password(
    db: TestDatabase,
    db_user: DbUser,
    controllers: Start,
    case: str,
    extra_env: dict[str, str],
) -> None:
    wrong_password = f"Wrong-{secrets.token_hex(8)}-Pw"
    proc = controllers(
        db.env(DB_USER=db_user.name, DB_PASSWORD=wrong_password, LOG_LEVEL="DEBUG", **extra_env)
    )
    code = proc.wait(60)
    output = proc.output.text()
    if case == "config error":
        assert code == 2, output
        assert "BATCH_SIZE" in output
    else:
        assert code == 1, output
        assert "access denied" in output
    assert wrong_password not in output
    assert db_user.password not in output
