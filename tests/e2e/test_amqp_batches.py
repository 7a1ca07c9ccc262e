"""Batched hand-offs end to end: tasks that come due together travel as one message.

Against the local RabbitMQ (and MariaDB where a controller runs): the
controller packs a claim's due tasks into few messages, workers fire every
task of a batch exactly once, a batch a killed worker held is fired again by
another, and one bad task in a batch fails alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from tests.e2e.test_amqp_faults import amqp_env, seen_ids, wait_all_done, worker_env
from tests.e2e.test_metrics import Health, free_port
from tests.support.broker import TestBroker
from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.tasks import insert_due_now
from tests.support.waiting import wait_until
from timer_controller.domain.messages import encode_handoff, handoff_part, pack_handoffs
from timer_controller.domain.task import ClaimedTask, OutcomeClass

Procs = Callable[..., Controller]
FAST = {"WEBHOOK_TIMEOUT": "5", "RECONNECT_WAIT_TIME": "0.2", "RETRY_NUMBER": "5"}


def _task(task_id: int, url: str) -> ClaimedTask:
    now = datetime.now(UTC).replace(tzinfo=None)
    return ClaimedTask(id=task_id, url=url, due_at=now, attempt=1, max_attempts=None)


def batch(first_id: int, urls: list[str]) -> bytes:
    return pack_handoffs([handoff_part(_task(first_id + i, u)) for i, u in enumerate(urls)])


def test_a_claims_due_tasks_travel_in_few_messages_and_each_fires_once(
    db: TestDatabase, amqp: TestBroker, receiver: Receiver, controllers: Procs, workers: Procs
) -> None:
    port = free_port()
    env = amqp_env(db, amqp, METRICS_PORT=str(port), BATCH_SIZE="60", MAX_IN_FLIGHT="100")
    controller = controllers(env)
    controller.wait_started()

    ids = insert_due_now(db.engine, receiver.url("/ok"), 60)
    wait_until(
        lambda: Health(port).scrape().value("timer_handoffs_confirmed_total") == 60,
        timeout_s=30,
        what="60 hand-offs confirmed",
    )
    # No worker yet: the queue shows how the 60 travel.
    messages = amqp.count(amqp.topology.deliveries)
    assert 1 <= messages <= 3
    workers(worker_env(amqp)).wait_started()

    wait_all_done(db, 60)
    assert seen_ids(receiver) == set(ids)
    assert receiver.stats()["count"] == 60
    assert amqp.count(amqp.topology.deliveries) == 0
    assert amqp.count(amqp.topology.dead) == 0


def test_kill_9_of_a_worker_holding_a_batch_hands_the_whole_batch_to_another(
    amqp: TestBroker, receiver: Receiver, workers: Procs
) -> None:
    amqp.publish(amqp.topology.deliveries, batch(1, [receiver.url("/slow/3000")] * 5))
    first = workers(amqp.env(**FAST))
    first.wait_started()
    wait_until(lambda: receiver.stats()["count"] == 5, timeout_s=20, what="5 requests in flight")

    first.kill()
    first.wait(10)
    second = workers(amqp.env(**FAST))
    second.wait_started()

    outcomes = amqp.take_outcomes(5, timeout_s=60)
    assert sorted(o.task_id for o in outcomes) == [1, 2, 3, 4, 5]
    assert {o.outcome.klass for o in outcomes} == {OutcomeClass.SUCCESS}
    stats = receiver.stats()
    assert stats["unique_ids"] == 5
    assert stats["count"] == 10  # each fired again after the crash, with the same webhook-id
    amqp.wait_count(amqp.topology.deliveries, 0)


def test_one_bad_task_in_a_batch_fails_alone_beside_version_1_messages(
    amqp: TestBroker, receiver: Receiver, workers: Procs
) -> None:
    good = json.loads(handoff_part(_task(1, receiver.url("/ok"))))
    tasks = [good, good | {"id": 2, "method": 7}, good | {"id": 3}]
    amqp.publish(amqp.topology.deliveries, json.dumps({"v": 2, "tasks": tasks}).encode())
    amqp.publish(amqp.topology.deliveries, encode_handoff(_task(4, receiver.url("/ok"))))

    worker = workers(amqp.env(**FAST))
    worker.wait_started()

    outcomes = {o.task_id: o for o in amqp.take_outcomes(4)}
    assert {i: o.outcome.klass for i, o in outcomes.items()} == {
        1: OutcomeClass.SUCCESS,
        2: OutcomeClass.INVALID,
        3: OutcomeClass.SUCCESS,
        4: OutcomeClass.SUCCESS,
    }
    assert "field 'method' is invalid" in (outcomes[2].outcome.error or "")
    assert sorted(int(r["id"]) for r in receiver.records()) == [1, 3, 4]
    amqp.wait_count(amqp.topology.deliveries, 0)
    assert amqp.count(amqp.topology.dead) == 0
