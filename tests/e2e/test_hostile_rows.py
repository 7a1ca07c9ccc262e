"""Bad rows never hurt others: one claimed batch of hostile rows among good ones.

Other systems write the rows, so anything can be in them. Each hostile row
must end ``failed`` after one attempt with a reason that says what is wrong
with it; every good row in the same batch is delivered; the loop survives.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.tasks import insert_task as insert
from tests.support.waiting import wait_until

BATCH_SIZE = 20
TEN_MB = 10 * 1024 * 1024
# The INSERT of a 10 MB body is one packet of a little more than 10 MB.
PACKET_NEEDED = TEN_MB + 1024 * 1024

Start = Callable[..., Controller]


@pytest.fixture
def room_for_10_mb(db: TestDatabase) -> Iterator[None]:
    """Make sure the server accepts a 10 MB statement, for this test only.

    MariaDB 10.11 (16 MB) and MySQL 8.4 (64 MB) allow it by default; a
    server configured lower gets its global limit raised for the test, which
    applies to connections opened afterwards.
    """
    with db.engine.connect() as conn:
        before = int(conn.execute(text("SELECT @@GLOBAL.max_allowed_packet")).scalar_one())
    if before >= PACKET_NEEDED:
        yield
        return
    with db.engine.begin() as conn:
        conn.execute(text("SET GLOBAL max_allowed_packet = :n"), {"n": 4 * PACKET_NEEDED})
    db.engine.dispose()  # pooled connections keep the old limit
    try:
        yield
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("SET GLOBAL max_allowed_packet = :n"), {"n": before})


def rows(db: TestDatabase) -> dict[int, Any]:
    with db.engine.connect() as conn:
        found = conn.execute(
            text("SELECT id, status, attempts, last_error, last_status_code FROM tasks")
        ).all()
    return {row.id: row for row in found}


def test_a_url_longer_than_the_column_is_refused_by_the_database(
    db: TestDatabase, receiver: Receiver
) -> None:
    """A 5,000-character URL never becomes a row.

    ``url`` is VARCHAR(2048) and the server runs in strict mode (the default
    of MySQL 8.4 and MariaDB 10.11), so the INSERT itself fails with error
    1406 "Data too long" instead of storing a truncated URL that would fire
    at the wrong place. The controller therefore never sees such a row; its
    own "URL longer than 2048 characters" check only matters on a server
    configured without strict mode.
    """
    long_url = receiver.url("/" + "a" * 5000)
    with pytest.raises(DBAPIError) as refused:
        insert(db, long_url)
    assert refused.value.orig is not None
    assert refused.value.orig.args[0] == 1406, refused.value.orig
    assert rows(db) == {}


@pytest.mark.usefixtures("room_for_10_mb")
def test_hostile_rows_fail_alone_and_good_rows_in_the_same_batch_are_done(
    db: TestDatabase, controllers: Start, receiver: Receiver
) -> None:
    # (name, url, extra columns, a substring the row's last_error must contain)
    hostile_specs: list[tuple[str, str, dict[str, Any], str]] = [
        ("empty url", "", {}, "empty URL"),
        ("ftp scheme", "ftp://x", {}, "unsupported scheme 'ftp'"),
        ("no host", "http://", {}, "no host"),
        ("invalid json", receiver.url("/h/json"), {"headers": '{"X-A": '}, "not valid JSON"),
        (
            "newline in header name",
            receiver.url("/h/name"),
            {"headers": json.dumps({"X-A\nInjected": "1"})},
            "not a valid HTTP header name",
        ),
        (
            "newline in header value",
            receiver.url("/h/value"),
            {"headers": json.dumps({"X-A": "1\r\nInjected: 2"})},
            "line break",
        ),
        ("headers not an object", receiver.url("/h/list"), {"headers": "[1]"}, "JSON object"),
        (
            "reserved header",
            receiver.url("/h/reserved"),
            {"headers": json.dumps({"webhook-id": "forged"})},
            "cannot be overridden",
        ),
        ("TRACE", receiver.url("/h/trace"), {"method": "TRACE"}, "method 'TRACE' is not allowed"),
        ("10 MB body", receiver.url("/h/body"), {"body": "x" * TEN_MB}, "MAX_REQUEST_BODY"),
    ]
    hostile: dict[int, tuple[str, str]] = {}
    good: list[int] = []
    for n, (name, url, columns, reason) in enumerate(hostile_specs):
        good.append(insert(db, receiver.url(f"/good/{n}")))
        hostile[insert(db, url, **columns)] = (name, reason)
    assert len(hostile) + len(good) == BATCH_SIZE  # every row fits the first claim

    proc = controllers(
        db.env(POLL_INTERVAL="0.1", BATCH_SIZE=str(BATCH_SIZE), MAX_ATTEMPTS="3", LOG_FORMAT="json")
    )
    wait_until(
        lambda: all(r.status in ("done", "failed") for r in rows(db).values()),
        timeout_s=40,
        what="every row to finish",
    )
    final = rows(db)

    lines = proc.json_lines()
    claims = [line["task_ids"] for line in lines if line.get("event") == "claimed"]
    # A row the claim itself could not take (the 10 MB body, never loaded)
    # failed in the claim's transaction, without a slot.
    refused = [
        line["task_id"]
        for line in lines
        if line.get("event") == "failed" and "without firing" in line.get("message", "")
    ]
    assert sorted(claims[0] + refused) == sorted(final), "the rows were not claimed as one batch"
    for task_id, (name, reason) in hostile.items():
        row = final[task_id]
        assert (row.status, row.attempts) == ("failed", 1), (name, row)
        assert reason in (row.last_error or ""), (name, row.last_error)
    for task_id in good:
        assert (final[task_id].status, final[task_id].attempts) == ("done", 1), final[task_id]
    seen = sorted(int(r["id"]) for r in receiver.records())
    assert seen == sorted(good), "a hostile row reached the receiver, or a good one did not"

    # The loop is alive and well: a row scheduled afterwards is delivered too.
    after = insert(db, receiver.url("/after"))
    wait_until(lambda: rows(db)[after].status == "done", timeout_s=30, what="a later task")
    assert proc.proc.poll() is None
    output = proc.output.text()
    assert "Traceback" not in output
    assert "x" * 1000 not in output  # the body is never logged
