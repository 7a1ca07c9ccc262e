"""Per-row isolation as a property: whatever the columns hold, good rows fire.

Hypothesis writes rows with arbitrary values inside the column types (zero
dates and INT extremes included), mixed into each batch with good rows,
against one real controller, database and receiver. Every good row must
be done, and no row may stay claimed past its lease or lose a lease to a
crash (the sweep's "lease expired" would say so).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.tasks import FAST_ENV
from tests.support.waiting import wait_until

Start = Callable[..., Controller]
INT = st.integers(-(2**31), 2**31 - 1)
GOOD_PER_BATCH = 3
# Bounded, so the test stays well under a minute in CI.
EXAMPLES = 20
ZERO_DATE = "0000-00-00 00:00:00"

json_leaf = st.one_of(st.text(max_size=20), st.integers(), st.booleans(), st.none())
json_value = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner)
)


def row_strategy(base_url: str) -> st.SearchStrategy[dict[str, Any]]:
    """One row's columns, each anything its type holds (text kept short for speed)."""
    local_url = st.builds(lambda path: f"{base_url}/{path}", st.text(max_size=40))
    return st.fixed_dictionaries(
        {
            "url": st.one_of(st.text(max_size=300), local_url, st.just(base_url + "/ok")),
            "due_at": st.one_of(
                st.just(ZERO_DATE),
                st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31)),
            ),
            "method": st.one_of(
                st.none(), st.text(max_size=16), st.sampled_from(["GET", "post", " PUT ", "TRACE"])
            ),
            "headers": st.one_of(
                st.none(),
                st.text(max_size=200),
                st.dictionaries(st.text(max_size=20), st.text(max_size=20)).map(json.dumps),
                json_value.map(json.dumps),
                st.integers(1, 20_000).map(lambda n: "[" * n + "]" * n),
            ),
            "body": st.one_of(st.none(), st.text(max_size=3000)),
            "max_attempts": st.one_of(st.none(), INT),
            "attempts": INT,
        }
    )


def insert_rows(db: TestDatabase, rows: list[dict[str, Any]]) -> None:
    with db.engine.begin() as conn:
        # MariaDB's default mode takes zero dates; MySQL's takes them once relaxed.
        conn.execute(text("SET SESSION sql_mode = ''"))
        for row in rows:
            conn.execute(
                text(
                    "INSERT INTO tasks (url, due_at, method, headers, body, max_attempts, "
                    "attempts) VALUES (:url, :due_at, :method, :headers, :body, "
                    ":max_attempts, :attempts)"
                ),
                row,
            )
        conn.execute(text("SET SESSION sql_mode = DEFAULT"))


def scalar(db: TestDatabase, sql: str, **params: Any) -> Any:
    with db.engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def test_any_row_fails_alone(db: TestDatabase, controllers: Start, receiver: Receiver) -> None:
    # Only localhost may be reached: a generated URL never waits on DNS or the network.
    base_url = receiver.base_url.replace("127.0.0.1", "localhost")
    env = {**FAST_ENV, "ALLOWED_HOSTS": "localhost", "BATCH_SIZE": "10", "MAX_REQUEST_BODY": "2000"}
    pod = controllers(db.env(**env))
    pod.wait_started()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(generated=st.lists(row_strategy(base_url), min_size=1, max_size=6))
    def batch_fires_every_good_row(generated: list[dict[str, Any]]) -> None:
        tag = uuid.uuid4().hex
        good = [
            {
                "url": f"{base_url}/good/{tag}/{n}",
                "due_at": scalar(db, "SELECT UTC_TIMESTAMP(6)"),
                "method": None,
                "headers": None,
                "body": None,
                "max_attempts": None,
                "attempts": 0,
            }
            for n in range(GOOD_PER_BATCH)
        ]
        insert_rows(db, [*generated, *good])
        wait_until(
            lambda: (
                scalar(
                    db,
                    "SELECT COUNT(*) FROM tasks WHERE url LIKE :tag AND status = 'done'",
                    tag=f"%/good/{tag}/%",
                )
                == GOOD_PER_BATCH
            ),
            timeout_s=30,
            what="every good row of the batch to be done",
        )
        assert pod.proc.poll() is None, pod.output.text()[-3000:]
        overdue = scalar(
            db,
            "SELECT COUNT(*) FROM tasks WHERE status = 'claimed' "
            "AND (lease_expires_at IS NULL OR lease_expires_at < UTC_TIMESTAMP(6))",
        )
        assert overdue == 0, "a row is claimed past its lease"

    batch_fires_every_good_row()

    lost = scalar(db, "SELECT COUNT(*) FROM tasks WHERE last_error LIKE 'lease expired%'")
    assert lost == 0, "a row lost its lease: something failed to record it"
    assert "Traceback" not in pod.output.text()
