"""Several real controller processes on one database: exactly-once firing, one migration.

Tasks are scheduled as other components schedule them, with a plain
``INSERT INTO tasks (url, due_at) VALUES …``; the receiver counts requests by
``webhook-id``, so a task fired twice or never is visible on the wire.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL

from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.tasks import count_by_status, insert_due_now
from tests.support.waiting import wait_until
from timer_controller.db.setup import alembic_config, make_engine

TASKS = 2000
PODS = 3
STARTING_AT_ONCE = 10


def claimed_ids(pod: Controller) -> list[int]:
    """Every task id this pod's JSON log says it claimed (with repeats, if any)."""
    return [
        task_id
        for line in pod.json_lines()
        if line.get("event") == "claimed"
        for task_id in line["task_ids"]
    ]


def test_three_pods_fire_2000_tasks_exactly_once(
    db: TestDatabase, receiver: Receiver, controllers: Callable[..., Controller]
) -> None:
    env = db.env(
        BATCH_SIZE="50",
        MAX_IN_FLIGHT="200",
        POLL_INTERVAL="0.2",
        # INFO in JSON: each claim's full id list, to show the pods' claims are disjoint.
        LOG_LEVEL="INFO",
        LOG_FORMAT="json",
    )
    pods = [controllers(env) for _ in range(PODS)]
    for pod in pods:
        pod.wait_started(timeout_s=60)
    ids = insert_due_now(db.engine, receiver.url("/ok"), TASKS)
    assert len(ids) == TASKS

    wait_until(
        lambda: count_by_status(db.engine).get("done") == TASKS,
        timeout_s=90,
        what=f"all {TASKS} tasks to be done",
    )

    assert count_by_status(db.engine) == {"done": TASKS}
    stats = receiver.stats()
    assert stats["duplicates"] == 0
    assert stats["unique_ids"] == TASKS
    assert stats["count"] == TASKS
    assert {int(r["id"]) for r in receiver.records()} == set(ids)
    for pod in pods:
        pod.terminate()
    for pod in pods:
        assert pod.wait(30) == 0, pod.output.text()[-2000:]
    per_pod = [claimed_ids(pod) for pod in pods]
    assert all(per_pod), f"a pod claimed nothing: {[len(c) for c in per_pod]}"
    every_claim = [task_id for claims in per_pod for task_id in claims]
    assert sorted(every_claim) == ids, "claims overlapped between pods or missed a task"


@pytest.fixture
def new_database_name(db_server: URL) -> Iterator[str]:
    """A database name that does not exist yet; dropped after the test."""
    name = f"tc_new_{secrets.token_hex(4)}"
    yield name
    admin = make_engine(db_server, pool_size=1)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        admin.dispose()


def _server_env(server: URL, name: str, **overrides: str) -> dict[str, str]:
    env = {
        "DB_HOST": server.host or "127.0.0.1",
        "DB_PORT": str(server.port or 3306),
        "DB_USER": server.username or "root",
        "DB_PASSWORD": server.password or "",
        "DB_NAME": name,
    }
    env.update(overrides)
    return env


def test_ten_pods_starting_at_once_on_a_new_database_migrate_it_exactly_once(
    db_server: URL, new_database_name: str, controllers: Callable[..., Controller]
) -> None:
    admin = make_engine(db_server, pool_size=1)
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = :n"),
                {"n": new_database_name},
            ).scalar_one()
        assert exists == 0
    finally:
        admin.dispose()
    # INFO: Alembic logs "Running upgrade" once per migration step it applies.
    env = _server_env(db_server, new_database_name, LOG_LEVEL="INFO", POLL_INTERVAL="0.5")
    pods = [controllers(env) for _ in range(STARTING_AT_ONCE)]
    for pod in pods:
        pod.wait_started(timeout_s=90)
    for pod in pods:
        pod.terminate()
    codes = []
    for pod in pods:
        try:
            codes.append(pod.wait(30))
        except subprocess.TimeoutExpired:
            pytest.fail(f"a pod did not stop on SIGTERM:\n{pod.output.text()[-2000:]}")
    assert codes == [0] * STARTING_AT_ONCE

    migrated = [pod for pod in pods if "Running upgrade" in pod.output.text()]
    assert len(migrated) == 1, [pod.output.text().count("Running upgrade") for pod in pods]
    engine = make_engine(db_server.set(database=new_database_name), pool_size=1)
    try:
        with engine.connect() as conn:
            versions = list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
            tasks = conn.execute(text("SELECT COUNT(*) FROM tasks")).scalar_one()
    finally:
        engine.dispose()
    assert versions == list(ScriptDirectory.from_config(alembic_config()).get_heads())
    assert tasks == 0
