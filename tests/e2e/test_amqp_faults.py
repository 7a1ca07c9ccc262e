"""DISPATCH=amqp end to end: controllers, workers, the local RabbitMQ and MariaDB.

Every fault here must lose nothing: each task ends ``done`` in the database,
and the receiver saw every task id (repeats are allowed only after a crash).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator

import pytest

from tests.e2e.test_metrics import Health, free_port
from tests.support.broker import AMQP_URL, TestBroker
from tests.support.cli_runner import closed_port, run_cli
from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.tasks import FAST_ENV, count_by_status, insert_due_now, insert_task
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_until

Procs = Callable[..., Controller]
# Broker reconnects fast enough for a test; QUEUE_LEASE_TIME well above LEASE_TIME.
AMQP_ENV = {
    **FAST_ENV,
    "DISPATCH": "amqp",
    "QUEUE_LEASE_TIME": "60",
    "RECONNECT_WAIT_TIME": "0.2",
    "RETRY_NUMBER": "50",
}


def wait_all_done(db: TestDatabase, total: int, *, timeout_s: float = 90) -> None:
    wait_until(
        lambda: count_by_status(db.engine).get("done", 0) == total,
        timeout_s=timeout_s,
        what=f"all {total} tasks done",
        interval_s=0.2,
    )


def seen_ids(receiver: Receiver) -> set[int]:
    return {int(r["id"]) for r in receiver.records()}


def amqp_env(db: TestDatabase, amqp: TestBroker, **extra: str) -> dict[str, str]:
    return db.env(**{**AMQP_ENV, **amqp.env(**extra)})


def worker_env(amqp: TestBroker, **extra: str) -> dict[str, str]:
    return amqp.env(WEBHOOK_TIMEOUT="2", RECONNECT_WAIT_TIME="0.2", RETRY_NUMBER="50", **extra)


def test_tasks_go_through_the_broker_and_end_done(
    db: TestDatabase, amqp: TestBroker, receiver: Receiver, controllers: Procs, workers: Procs
) -> None:
    controller = controllers(amqp_env(db, amqp, METRICS_PORT="0"))
    worker = workers(worker_env(amqp))
    controller.wait_started()
    worker.wait_started()

    ids = insert_due_now(db.engine, receiver.url("/ok"), 200)

    wait_all_done(db, 200)
    assert seen_ids(receiver) == set(ids)
    assert receiver.stats()["duplicates"] == 0
    assert amqp.count(amqp.topology.deliveries) == 0
    amqp.wait_count(amqp.topology.outcomes, 0)
    assert amqp.count(amqp.topology.dead) == 0


def test_kill_9_of_a_worker_mid_request_loses_nothing(
    db: TestDatabase, amqp: TestBroker, receiver: Receiver, controllers: Procs, workers: Procs
) -> None:
    controller = controllers(amqp_env(db, amqp))
    doomed = workers(worker_env(amqp))
    controller.wait_started()
    doomed.wait_started()
    ids = insert_due_now(db.engine, receiver.url("/slow/1500"), 20)
    wait_until(lambda: receiver.stats()["count"] >= 20, timeout_s=30, what="20 requests sent")

    doomed.kill()
    doomed.wait(10)
    workers(worker_env(amqp)).wait_started()

    wait_all_done(db, 20)
    assert seen_ids(receiver) == set(ids)


def test_kill_9_of_a_controller_after_publishing_loses_nothing(
    db: TestDatabase, amqp: TestBroker, receiver: Receiver, controllers: Procs, workers: Procs
) -> None:
    port = free_port()
    doomed = controllers(amqp_env(db, amqp, METRICS_PORT=str(port)))
    doomed.wait_started()
    ids = insert_due_now(db.engine, receiver.url("/ok"), 30)
    wait_until(  # handed off (in batches); no worker yet
        lambda: Health(port).scrape().value("timer_handoffs_confirmed_total") == 30,
        timeout_s=30,
        what="30 hand-offs confirmed",
    )

    doomed.kill()
    doomed.wait(10)
    other = controllers(amqp_env(db, amqp))
    workers(worker_env(amqp)).wait_started()
    other.wait_started()

    # The other controller records outcomes of tasks it never claimed.
    wait_all_done(db, 30)
    assert seen_ids(receiver) == set(ids)
    assert receiver.stats()["duplicates"] == 0


@pytest.fixture
def broker_restored() -> Iterator[None]:
    """Whatever the test does to the shared broker, it is running again afterwards."""
    try:
        yield
    finally:
        subprocess.run(["rabbitmqctl", "-q", "start_app"], timeout=120, check=False)
        subprocess.run(
            ["rabbitmqctl", "-q", "await_startup", "--timeout", "60"], timeout=120, check=True
        )


@pytest.mark.usefixtures("broker_restored")
def test_a_broker_restart_mid_run_loses_nothing(
    db: TestDatabase, amqp: TestBroker, receiver: Receiver, controllers: Procs, workers: Procs
) -> None:
    controller = controllers(amqp_env(db, amqp))
    worker = workers(worker_env(amqp))
    controller.wait_started()
    worker.wait_started()
    ids = insert_due_now(db.engine, receiver.url("/slow/200"), 100)
    wait_until(lambda: receiver.stats()["count"] >= 10, timeout_s=30, what="firing under way")

    # Other engineers share this broker: keep the outage to a few seconds.
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], timeout=60, check=True)
    subprocess.run(["rabbitmqctl", "-q", "start_app"], timeout=60, check=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "await_startup", "--timeout", "60"], timeout=90, check=True
    )

    wait_all_done(db, 100, timeout_s=120)
    assert seen_ids(receiver) == set(ids)
    assert controller.proc.poll() is None
    assert worker.proc.poll() is None
    assert "reconnected to RabbitMQ" in controller.output.text()
    assert "reconnected to RabbitMQ" in worker.output.text()


def test_a_broker_down_at_start_within_the_retries_is_waited_for(
    db: TestDatabase, amqp: TestBroker, receiver: Receiver, controllers: Procs, workers: Procs
) -> None:
    host, port = "127.0.0.1", 5672
    with TcpProxy(host, port) as proxy:
        proxy.cut()
        url = AMQP_URL.replace(f"{host}:{port}", f"{host}:{proxy.port}")
        controller = controllers({**amqp_env(db, amqp), "AMQP_URL": url})
        wait_until(
            lambda: controller.output.text().count("unreachable (try") >= 2,
            timeout_s=30,
            what="two refused connection tries",
        )
        proxy.restore()
        controller.wait_started()
        workers(worker_env(amqp)).wait_started()
        ids = insert_due_now(db.engine, receiver.url("/ok"), 10)

        wait_all_done(db, 10)
        assert seen_ids(receiver) == set(ids)


def test_a_broker_down_beyond_the_retries_exits_1(db: TestDatabase, amqp: TestBroker) -> None:
    port = closed_port()
    env = {
        **amqp_env(db, amqp),
        "AMQP_URL": f"amqp://guest:pw-not-shown@127.0.0.1:{port}/",
        "RETRY_NUMBER": "3",
        "RECONNECT_WAIT_TIME": "0.1",
    }

    result = run_cli(env, "run")

    assert result.code == 1
    assert result.stderr_lines()[-1] == (
        f"timer-controller: RabbitMQ at amqp://guest:***@127.0.0.1:{port}/ unreachable "
        "after 3 tries: connection refused"
    )
    assert "pw-not-shown" not in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("side", ["controller", "worker"])
def test_a_sigterm_while_the_broker_is_down_at_start_stops_at_once(
    side: str, db: TestDatabase, amqp: TestBroker, controllers: Procs, workers: Procs
) -> None:
    """Not after every try has failed (RETRY_NUMBER × RECONNECT_WAIT_TIME: 10 minutes
    here), and not killed by the signal: a graceful exit 0, nothing started."""
    url = f"amqp://guest:guest@127.0.0.1:{closed_port()}/"
    slow_tries = {"RETRY_NUMBER": "600", "RECONNECT_WAIT_TIME": "1"}
    if side == "controller":
        proc = controllers({**amqp_env(db, amqp), **slow_tries, "AMQP_URL": url})
    else:
        proc = workers({**worker_env(amqp), **slow_tries, "AMQP_URL": url})
    wait_until(
        lambda: "unreachable (try 2 of 600)" in proc.output.text(),
        timeout_s=30,
        what="two refused connection tries",
    )

    proc.terminate()

    assert proc.wait(timeout_s=10) == 0
    assert f"stopped during start-up, before the {side} started" in proc.output.text()
    assert "unreachable after" not in proc.output.text()


def test_a_poison_outcome_is_dead_lettered_and_recording_goes_on(
    db: TestDatabase, amqp: TestBroker, receiver: Receiver, controllers: Procs, workers: Procs
) -> None:
    amqp.publish(amqp.topology.outcomes, b"]not an outcome[")
    controller = controllers(amqp_env(db, amqp))
    workers(worker_env(amqp)).wait_started()
    controller.wait_started()
    ids = insert_due_now(db.engine, receiver.url("/ok"), 5)

    wait_all_done(db, 5)
    amqp.wait_count(amqp.topology.dead, 1)
    assert amqp.take(amqp.topology.dead) == [b"]not an outcome["]
    assert "dead-lettered a malformed outcome" in controller.output.text()
    assert seen_ids(receiver) == set(ids)


def test_a_controller_killed_before_its_publish_is_rescued_by_the_lease_sweep(
    db: TestDatabase, amqp: TestBroker, receiver: Receiver, controllers: Procs, workers: Procs
) -> None:
    # A short queue lease, so the rescue comes within the test; the look-ahead
    # claims the task seconds before it is due, and the controller dies holding it.
    env = amqp_env(db, amqp, LOOKAHEAD="4", LEASE_TIME="4.5", QUEUE_LEASE_TIME="10")
    doomed = controllers(env)
    doomed.wait_started()
    task_id = insert_task(db, receiver.url("/ok"), in_s=3)
    wait_until(
        lambda: count_by_status(db.engine) == {"claimed": 1},
        timeout_s=20,
        what="the task to be claimed ahead of its due time",
    )

    doomed.kill()
    doomed.wait(10)
    assert amqp.count(amqp.topology.deliveries) == 0  # never handed off
    controllers(env).wait_started()
    workers(worker_env(amqp)).wait_started()

    wait_all_done(db, 1, timeout_s=60)
    assert seen_ids(receiver) == {task_id}
    assert receiver.stats()["count"] == 1
