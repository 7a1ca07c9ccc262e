"""/metrics, /healthz and /readyz of a real controller process during a real run.

The numbers scraped from /metrics are checked against what the receiver saw
and what the rows say, not against the controller's own idea of itself.
"""

from __future__ import annotations

import secrets
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.waiting import wait_until

Start = Callable[..., Controller]
Labels = tuple[tuple[str, str], ...]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Scrape:
    """One /metrics answer: sample name and labels -> value."""

    values: dict[tuple[str, Labels], float]

    def value(self, name: str, **labels: str) -> float:
        """A sample's value; a labelled child never incremented is absent, so 0."""
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def total(self, name: str) -> float:
        """The sum over every label combination of ``name``."""
        return sum(v for (sample, _), v in self.values.items() if sample == name)

    def by_label(self, name: str, label: str) -> dict[str, float]:
        return {
            dict(labels)[label]: v
            for (sample, labels), v in self.values.items()
            if sample == name and v
        }


class Health:
    """HTTP client for the controller's metrics port."""

    def __init__(self, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base_url + path, timeout=10)

    def scrape(self) -> Scrape:
        response = self.get("/metrics")
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/plain")
        values: dict[tuple[str, Labels], float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return Scrape(values)


def insert_tasks(db: TestDatabase, urls: list[str]) -> list[int]:
    """Plain-SQL scheduling, due now by the database's clock; the new ids in order."""
    ids: list[int] = []
    with db.engine.begin() as conn:
        for url in urls:
            result = conn.execute(
                text("INSERT INTO tasks (url, due_at) VALUES (:url, UTC_TIMESTAMP(6))"),
                {"url": url},
            )
            ids.append(int(result.lastrowid))
    return ids


def count_finished(db: TestDatabase) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT COUNT(*) FROM tasks WHERE status IN ('done', 'failed')")
            ).scalar_one()
        )


def start_with_metrics(db: TestDatabase, controllers: Start, **env: str) -> Health:
    port = free_port()
    proc = controllers(
        db.env(METRICS_PORT=str(port), POD_NAME=f"metrics-{secrets.token_hex(3)}", **env)
    )
    proc.wait_started()
    return Health(port)


def test_metrics_match_what_the_receiver_saw(
    db: TestDatabase, receiver: Receiver, controllers: Start
) -> None:
    health = start_with_metrics(
        db,
        controllers,
        MAX_ATTEMPTS="2",
        RETRY_BACKOFF_BASE="0.1",
        RETRY_BACKOFF_MAX="0.2",
    )
    n_ok, n_gone, n_busy = 10, 4, 3
    urls = (
        [receiver.url("/ok")] * n_ok
        + [receiver.url("/status/404")] * n_gone
        + [receiver.url("/status/503")] * n_busy
    )
    insert_tasks(db, urls)
    assert health.get("/healthz").status_code == 200  # alive while the loop runs

    wait_until(lambda: count_finished(db) == len(urls), timeout_s=60, what="every task finished")
    scrape = health.scrape()
    assert health.get("/healthz").status_code == 200

    arrivals = Counter(rec["path"] for rec in receiver.records())
    # MAX_ATTEMPTS=2: each 503 task is tried twice, the others once.
    assert arrivals == {"/ok": n_ok, "/status/404": n_gone, "/status/503": 2 * n_busy}
    seen = receiver.stats()["count"]
    assert seen == n_ok + n_gone + 2 * n_busy

    assert scrape.value("timer_tasks_claimed_total") == seen  # a retry is claimed again
    assert scrape.total("timer_tasks_fired_total") == seen
    assert scrape.by_label("timer_tasks_fired_total", "outcome") == {
        "success": n_ok,
        "final_status": n_gone,
        "retryable_status": 2 * n_busy,
    }
    assert scrape.value("timer_tasks_done_total") == n_ok
    assert scrape.by_label("timer_tasks_failed_total", "outcome") == {
        "final_status": n_gone,
        "retryable_status": n_busy,
    }
    assert scrape.by_label("timer_tasks_retried_total", "outcome") == {"retryable_status": n_busy}
    assert scrape.value("timer_tasks_released_total") == 0
    assert scrape.value("timer_lateness_seconds_count") == seen
    assert scrape.value("timer_request_duration_seconds_count") == seen
    assert scrape.value("timer_lateness_seconds_bucket", le="+Inf") == seen
    assert scrape.value("timer_request_duration_seconds_sum") > 0
    assert scrape.value("timer_requests_in_flight") == 0
    assert scrape.value("timer_tasks_held") == 0
    assert scrape.value("timer_db_reconnects_total") == 0


def test_readyz_is_503_unless_migrations_are_at_head(db: TestDatabase, controllers: Start) -> None:
    health = start_with_metrics(db, controllers)
    assert health.get("/readyz").status_code == 200
    with db.engine.begin() as conn:
        head = conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
        conn.execute(text("UPDATE alembic_version SET version_num = 'not_a_revision'"))
    assert health.get("/readyz").status_code == 503

    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    assert health.get("/readyz").status_code == 200

    with db.engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
    assert health.get("/readyz").status_code == 503
    assert health.get("/healthz").status_code == 200  # alive, just not ready


def test_unknown_path_is_404(db: TestDatabase, controllers: Start) -> None:
    health = start_with_metrics(db, controllers)
    for path in ("/", "/metrics/extra", "/nope", "/healthz/x"):
        assert health.get(path).status_code == 404, path


def test_backlog_gauge_counts_due_tasks_nobody_claimed(
    db: TestDatabase, receiver: Receiver, controllers: Start
) -> None:
    # One request at a time to a 200 ms receiver: 100 tasks take 20 s or more,
    # so the 10 s backlog sample must see due tasks left unclaimed.
    n_tasks = 100
    health = start_with_metrics(db, controllers, MAX_IN_FLIGHT="1")
    insert_tasks(db, [receiver.url("/slow/200")] * n_tasks)
    scrapes: list[Scrape] = []

    def backlog_seen() -> float:
        scrapes.append(health.scrape())
        return scrapes[-1].value("timer_backlog_tasks")

    backlog = wait_until(backlog_seen, timeout_s=30, what="the backlog gauge to rise above 0")
    assert 0 < backlog <= n_tasks
    # The gauge counts unclaimed tasks only: at most one is claimed at a time.
    with db.engine.connect() as conn:
        waiting = conn.execute(
            text("SELECT COUNT(*) FROM tasks WHERE status = 'waiting'")
        ).scalar_one()
    assert backlog >= waiting  # sampled earlier, when at least as many were waiting
    assert all(s.value("timer_requests_in_flight") <= 1 for s in scrapes)
    assert all(s.value("timer_tasks_held") <= 1 for s in scrapes)
