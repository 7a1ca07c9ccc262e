"""The controller's side of DISPATCH=amqp: its metrics, and outcomes guarded by attempt."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import text

from tests.e2e.test_amqp_faults import amqp_env, worker_env
from tests.e2e.test_metrics import Health, free_port
from tests.support.broker import TestBroker
from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.tasks import count_by_status, insert_due_now, insert_task
from tests.support.waiting import wait_until
from timer_controller.domain.messages import encode_outcome
from timer_controller.domain.task import ClaimedTask, Outcome, OutcomeClass

Procs = Callable[..., Controller]


def test_controller_metrics_count_handoffs_and_recorded_outcomes(
    db: TestDatabase, amqp: TestBroker, receiver: Receiver, controllers: Procs, workers: Procs
) -> None:
    port = free_port()
    controller = controllers(amqp_env(db, amqp, METRICS_PORT=str(port)))
    workers(worker_env(amqp)).wait_started()
    controller.wait_started()

    insert_due_now(db.engine, receiver.url("/ok"), 8)
    wait_until(lambda: count_by_status(db.engine) == {"done": 8}, timeout_s=60, what="8 done")

    health = Health(port)
    wait_until(
        lambda: health.scrape().value("timer_outcomes_recorded_total") == 8,
        timeout_s=10,
        what="8 outcomes recorded in the metrics",
    )
    scrape = health.scrape()
    assert scrape.value("timer_handoffs_published_total") == 8
    assert scrape.value("timer_handoffs_confirmed_total") == 8
    assert scrape.value("timer_outcomes_stale_total") == 0
    assert scrape.value("timer_tasks_done_total") == 8
    assert scrape.value("timer_requests_in_flight") == 0  # the workers sent them


def test_an_outcome_for_a_superseded_attempt_is_dropped_and_counted(
    db: TestDatabase, amqp: TestBroker, receiver: Receiver, controllers: Procs
) -> None:
    # Due in an hour: nobody claims it, so its attempt 1 was never the current one.
    task_id = insert_task(db, receiver.url("/ok"), in_s=3600)
    late = ClaimedTask(
        id=task_id,
        url=receiver.url("/ok"),
        due_at=datetime.now(UTC).replace(tzinfo=None),
        attempt=1,
        max_attempts=None,
    )
    amqp.publish(
        amqp.topology.outcomes,
        encode_outcome(late, Outcome(task_id, OutcomeClass.SUCCESS, status_code=200)),
    )
    port = free_port()
    controller = controllers(amqp_env(db, amqp, METRICS_PORT=str(port)))
    controller.wait_started()

    wait_until(
        lambda: Health(port).scrape().value("timer_outcomes_stale_total") == 1,
        timeout_s=30,
        what="the stale outcome to be counted",
    )
    amqp.wait_count(amqp.topology.outcomes, 0)  # acked, not redelivered
    with db.engine.connect() as conn:
        row = conn.execute(
            text("SELECT status, attempts FROM tasks WHERE id = :id"), {"id": task_id}
        ).one()
    assert (row.status, row.attempts) == ("waiting", 0)
    assert Health(port).scrape().value("timer_outcomes_recorded_total") == 0
