"""One destination that hangs must not make the others late (MAX_IN_FLIGHT_PER_HOST).

Two receivers on two ports are two destinations. ``/hang`` accepts the
request and never answers: each such request holds its slot for the whole
``WEBHOOK_TIMEOUT``.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.test_delivery import by_id, epoch, task_rows
from tests.e2e.test_failures import insert_tasks
from tests.e2e.test_metrics import Health, free_port
from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.tasks import FAST_ENV
from tests.support.waiting import wait_until
from timer_controller.settings import load_settings

Start = Callable[..., Controller]


@pytest.fixture
def healthy() -> Iterator[Receiver]:
    started = Receiver()
    try:
        yield started
    finally:
        started.stop()


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def test_150_hanging_timers_never_make_50_healthy_ones_late_with_shipped_defaults(
    db: TestDatabase, receiver: Receiver, healthy: Receiver, controllers: Start
) -> None:
    shipped = load_settings(**db.env())
    port = free_port()
    pod = controllers(db.env(METRICS_PORT=str(port)))  # every other setting as shipped
    pod.wait_started()
    health = Health(port)
    hanging = insert_tasks(db.engine, receiver.url("/hang"), [0.0] * 150)
    prompt = insert_tasks(db.engine, healthy.url("/ok"), [1.0] * 50)

    wait_until(
        lambda: len(healthy.records()) >= len(prompt), timeout_s=30, what="the healthy timers"
    )
    rows = task_rows(db, prompt)
    seen = by_id(healthy)
    lateness_s = [seen[i][0]["t"] - epoch(rows[i].due_at) for i in prompt]
    assert min(lateness_s) >= 0
    assert p99(lateness_s) <= 0.5, sorted(lateness_s)[-5:]
    print(f"healthy lateness: p50 {statistics.median(lateness_s):.3f}s p99 {p99(lateness_s):.3f}s")

    scrape = health.scrape()
    assert scrape.value("timer_destination_in_flight_max") == shipped.host_limit
    assert scrape.value("timer_destinations_at_limit") == 1
    assert scrape.value("timer_tasks_deferred_total") > 0

    # Rounds of host_limit requests, each held for WEBHOOK_TIMEOUT.
    rounds = -(-len(hanging) // shipped.host_limit)
    wait_until(
        lambda: set(by_id(receiver)) >= set(hanging),
        timeout_s=rounds * shipped.webhook_timeout_s + 60,
        what="every hanging timer to be attempted",
        interval_s=1.0,
    )
    # Due order (one due_at for all, so id order), round by round: a round
    # starts when the last one's requests time out. The requests of one
    # round go out within milliseconds, over new connections, and reach the
    # receiver in any order, so within a round order is not observable.
    firsts = {i: records[0]["t"] for i, records in by_id(receiver).items()}
    overtook = [  # (id, how long before a lower id it was first tried)
        (task_id, max(firsts[i] for i in hanging if i < task_id) - firsts[task_id])
        for task_id in sorted(hanging)[1:]
    ]
    slack_s = shipped.webhook_timeout_s / 4
    assert [(i, s) for i, s in overtook if s > slack_s] == []
    final = task_rows(db, hanging)
    assert {r.status for r in final.values()} <= {"waiting", "claimed", "failed"}
    assert all(r.attempts >= 1 for r in final.values())


def test_a_saturated_destination_fires_every_timer_with_all_its_attempts_in_due_order(
    db: TestDatabase, receiver: Receiver, healthy: Receiver, controllers: Start
) -> None:
    env = {**FAST_ENV, "WEBHOOK_TIMEOUT": "1", "LEASE_TIME": "5", "MAX_ATTEMPTS": "2"}
    controllers(db.env(MAX_IN_FLIGHT_PER_HOST="2", **env)).wait_started()
    hanging = insert_tasks(db.engine, receiver.url("/hang"), [i * 0.01 for i in range(8)])
    others = insert_tasks(db.engine, healthy.url("/ok"), [0.5 + i * 0.1 for i in range(10)])

    wait_until(
        lambda: {r.status for r in task_rows(db, hanging + others).values()} <= {"done", "failed"},
        timeout_s=90,
        what="every timer to finish",
    )
    rows = task_rows(db, hanging + others)
    assert {(rows[i].status, rows[i].attempts) for i in hanging} == {("failed", 2)}
    assert {(rows[i].status, rows[i].attempts) for i in others} == {("done", 1)}
    seen = by_id(receiver)
    assert Counter({i: len(seen[i]) for i in hanging}) == Counter(dict.fromkeys(hanging, 2))
    first_tries = sorted(hanging, key=lambda i: seen[i][0]["t"])
    assert first_tries == hanging  # in due order
    for task_id in others:  # never behind the hanging ones: each well inside one timeout
        (record,) = by_id(healthy)[task_id]
        assert record["t"] - epoch(rows[task_id].due_at) < 0.5
