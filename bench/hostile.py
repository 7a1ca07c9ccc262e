"""Hostile input for the memory trial: poison rows and receivers that answer badly.

The promise measured: at the shipped defaults a pod's peak RSS stays at or
under 200 MB whatever rows and receivers do. Each row below once crashed a
pod, stalled the fleet, or cost hundreds of megabytes (issue 14).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

RSS_PROMISE_MB = 200.0
#: Larger than MAX_REQUEST_BODY (1 MiB by default), below max_allowed_packet (16 MiB).
OVERSIZED_BODY_BYTES = 15 * 1024 * 1024
#: Exactly MAX_REQUEST_BODY: loaded and sent, a hundred at a time at the defaults.
FULL_BODY_BYTES = 1024 * 1024
DEEP_JSON = "[" * 30_000 + "]" * 30_000  # fits TEXT (64 KiB)


@dataclass(frozen=True, slots=True)
class HostileRow:
    what: str
    #: Column assignments beyond url; values are SQL expressions with %s parameters.
    columns: dict[str, str]
    params: tuple[Any, ...] = ()
    path: str = "/ok"
    #: What the row must end as: the good rows are done, the poison ones failed.
    expected: str = "failed"


def hostile_rows(*, full_bodies: int, oversized_bodies: int) -> list[HostileRow]:
    """Poison rows, and good rows aimed at hostile receivers (FOLLOW_REDIRECTS on)."""
    now = {"due_at": "UTC_TIMESTAMP(6)"}
    rows = [
        HostileRow("zero due_at", {"due_at": "'0000-00-00 00:00:00'"}),
        HostileRow("attempts at INT's maximum", {**now, "attempts": "2147483647"}),
        HostileRow("deeply nested headers", {**now, "headers": "%s"}, (DEEP_JSON,)),
        HostileRow("header name ending in \\n", {**now, "headers": "%s"}, ('{"X-A\\n":"1"}',)),
    ]
    for what, path in [
        ("gzip bomb behind a redirect", "/gzip-redirect"),
        ("gzip bomb answer", "/gzip"),
        ("192 MiB redirect body", "/huge-redirect"),
        ("10 MiB answer", "/big"),
        ("endless answer", "/stream"),
    ]:
        rows.append(HostileRow(what, now, path=path, expected="done"))
    body = {**now, "body": "REPEAT('x', %s)"}
    rows += [
        HostileRow("body over MAX_REQUEST_BODY", body, (OVERSIZED_BODY_BYTES,))
        for _ in range(oversized_bodies)
    ]
    rows += [
        HostileRow(
            "1 MiB body to a slow receiver",
            body,
            (FULL_BODY_BYTES,),
            path="/slow/1000",
            expected="done",
        )
        for _ in range(full_bodies)
    ]
    return rows


def insert_hostile(conn: Any, base_url: str, rows: list[HostileRow]) -> list[int]:
    """Insert ``rows`` as other systems could (zero dates allowed); their ids."""
    cur = conn.cursor()
    # MariaDB's default sql_mode takes a zero date; MySQL's takes it once relaxed.
    cur.execute("SET SESSION sql_mode = ''")
    ids: list[int] = []
    for row in rows:
        names = ", ".join(["url", *row.columns])
        values = ", ".join(["%s", *row.columns.values()])
        cur.execute(
            f"INSERT INTO tasks ({names}) VALUES ({values})", (base_url + row.path, *row.params)
        )
        ids.append(int(cur.lastrowid))
    cur.execute("COMMIT")
    cur.execute("SET SESSION sql_mode = DEFAULT")
    return ids


def check_outcomes(conn: Any, ids: list[int], rows: list[HostileRow]) -> list[str]:
    """Each hostile row that did not end as expected, described."""
    cur = conn.cursor()
    problems = []
    for task_id, row in zip(ids, rows, strict=True):
        cur.execute("SELECT status, last_error FROM tasks WHERE id = %s", (task_id,))
        status, error = cur.fetchone()
        if status != row.expected:
            problems.append(f"{row.what}: {status} ({error}), expected {row.expected}")
    return problems
