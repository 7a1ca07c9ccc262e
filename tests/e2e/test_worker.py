"""``timer-controller worker`` against the local RabbitMQ and a real receiver.

The test plays the controller: it publishes hand-offs and reads outcomes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import httpx
import pytest

from tests.support.broker import AMQP_URL, TestBroker
from tests.support.cli_runner import closed_port, run_cli
from tests.support.processes import Controller, Receiver
from tests.support.waiting import wait_until
from timer_controller.domain.messages import encode_handoff
from timer_controller.domain.task import ClaimedTask, OutcomeClass

Workers = Callable[..., Controller]
FAST = {"WEBHOOK_TIMEOUT": "5", "RECONNECT_WAIT_TIME": "0.2", "RETRY_NUMBER": "5"}


def handoff(task_id: int, url: str, *, attempt: int = 1) -> bytes:
    now = datetime.now(UTC).replace(tzinfo=None)
    return encode_handoff(
        ClaimedTask(id=task_id, url=url, due_at=now, attempt=attempt, max_attempts=None)
    )


def hand_off(amqp: TestBroker, urls: list[str]) -> None:
    for task_id, url in enumerate(urls, start=1):
        amqp.publish(amqp.topology.deliveries, handoff(task_id, url))


def test_worker_fires_each_handoff_and_reports_its_outcome(
    amqp: TestBroker, receiver: Receiver, workers: Workers
) -> None:
    hand_off(amqp, [receiver.url("/ok")] * 5 + [receiver.url("/status/503")])

    worker = workers(amqp.env(**FAST))
    worker.wait_started()
    outcomes = {o.task_id: o for o in amqp.take_outcomes(6)}
    assert sorted(outcomes) == [1, 2, 3, 4, 5, 6]
    assert {outcomes[i].outcome.klass for i in range(1, 6)} == {OutcomeClass.SUCCESS}
    assert outcomes[6].outcome.klass is OutcomeClass.RETRYABLE_STATUS
    assert outcomes[6].outcome.status_code == 503
    assert all(o.attempt == 1 for o in outcomes.values())
    assert amqp.count(amqp.topology.deliveries) == 0
    assert sorted(int(r["id"]) for r in receiver.records()) == [1, 2, 3, 4, 5, 6]


def test_poison_message_is_dead_lettered_and_logged_and_the_worker_goes_on(
    amqp: TestBroker, receiver: Receiver, workers: Workers
) -> None:
    amqp.publish(amqp.topology.deliveries, b'{"v": 1, "id": "not a number"')
    amqp.publish(amqp.topology.deliveries, handoff(7, receiver.url("/ok")))

    worker = workers(amqp.env(**FAST))
    worker.wait_started()
    assert [o.task_id for o in amqp.take_outcomes(1)] == [7]
    amqp.wait_count(amqp.topology.dead, 1)

    assert amqp.take(amqp.topology.dead) == [b'{"v": 1, "id": "not a number"']
    assert amqp.count(amqp.topology.deliveries) == 0
    wait_until(
        lambda: "dead-lettered a malformed hand-off: hand-off is not JSON" in worker.output.text(),
        timeout_s=10,
        what="the poison message to be logged",
    )
    assert receiver.stats()["count"] == 1


def test_sigterm_lets_in_flight_requests_finish_within_the_grace(
    amqp: TestBroker, receiver: Receiver, workers: Workers
) -> None:
    hand_off(amqp, [receiver.url("/slow/1500")] * 5)
    worker = workers(amqp.env(WORKER_CONCURRENCY="2", SHUTDOWN_GRACE="20", **FAST))
    worker.wait_started()
    wait_until(lambda: receiver.stats()["count"] == 2, timeout_s=20, what="2 requests in flight")

    worker.terminate()

    assert worker.wait(30) == 0
    assert len(amqp.take_outcomes(2)) == 2
    assert amqp.count(amqp.topology.deliveries) == 3  # never started: still queued
    assert receiver.stats()["count"] == 2


def test_sigterm_requeues_requests_still_running_after_the_grace(
    amqp: TestBroker, receiver: Receiver, workers: Workers
) -> None:
    hand_off(amqp, [receiver.url("/slow/4000")] * 3)
    worker = workers(amqp.env(WORKER_CONCURRENCY="10", SHUTDOWN_GRACE="0.5", **FAST))
    worker.wait_started()
    wait_until(lambda: receiver.stats()["count"] == 3, timeout_s=20, what="3 requests in flight")

    worker.terminate()

    assert worker.wait(30) == 0
    assert "requeueing them" in worker.output.text()
    amqp.wait_count(amqp.topology.deliveries, 3)
    assert amqp.count(amqp.topology.outcomes) == 0


def test_kill_9_mid_request_hands_its_deliveries_to_another_worker(
    amqp: TestBroker, receiver: Receiver, workers: Workers
) -> None:
    hand_off(amqp, [receiver.url("/slow/3000")] * 3)
    first = workers(amqp.env(**FAST))
    first.wait_started()
    wait_until(lambda: receiver.stats()["count"] == 3, timeout_s=20, what="3 requests in flight")

    first.kill()
    first.wait(10)
    second = workers(amqp.env(**FAST))
    second.wait_started()

    outcomes = amqp.take_outcomes(3, timeout_s=60)
    assert sorted(o.task_id for o in outcomes) == [1, 2, 3]
    assert {o.outcome.klass for o in outcomes} == {OutcomeClass.SUCCESS}
    stats = receiver.stats()
    assert stats["unique_ids"] == 3
    assert stats["count"] == 6  # each fired again after the crash, with the same webhook-id


def test_worker_needs_amqp_url_but_no_database_settings() -> None:
    result = run_cli({}, "worker")

    assert result.code == 2
    assert result.stderr_lines() == [
        "timer-controller: configuration error: "
        "AMQP_URL is required by the worker (set AMQP_URL or AMQP_URL_FILE)"
    ]


def test_unreachable_broker_exits_1_after_the_retries_without_the_password() -> None:
    port = closed_port()
    url = f"amqp://guest:s3cret-pw@127.0.0.1:{port}/"

    result = run_cli({"AMQP_URL": url, "RETRY_NUMBER": "3", "RECONNECT_WAIT_TIME": "0.1"}, "worker")

    assert result.code == 1
    assert result.stderr_lines()[-1] == (
        f"timer-controller: RabbitMQ at amqp://guest:***@127.0.0.1:{port}/ unreachable "
        "after 3 tries: connection refused"
    )
    assert result.output.count("unreachable (try") == 3
    assert "s3cret-pw" not in result.output
    assert "Traceback" not in result.output


def test_amqp_url_is_never_logged(amqp: TestBroker, workers: Workers) -> None:
    worker = workers(amqp.env(**FAST))
    worker.wait_started()
    worker.stop()

    assert AMQP_URL not in worker.output.text()
    assert "guest:***@" in worker.output.text()
    assert not isinstance(worker.proc, subprocess.CompletedProcess)


@pytest.fixture
def broker_restored() -> Iterator[None]:
    """Whatever the test does to the shared broker, it runs and answers again afterwards."""
    try:
        yield
    finally:
        subprocess.run(["rabbitmqctl", "-q", "start_app"], timeout=120, check=False)
        subprocess.run(
            ["rabbitmqctl", "-q", "await_startup", "--timeout", "60"], timeout=120, check=True
        )


@pytest.mark.usefixtures("broker_restored")
def test_a_worker_reconnects_after_a_broker_restart_and_consumes_again(
    amqp: TestBroker, receiver: Receiver, workers: Workers
) -> None:
    worker = workers(amqp.env(**FAST))
    worker.wait_started()

    # Other engineers share this broker: a few seconds' outage only.
    subprocess.run(["rabbitmqctl", "-q", "stop_app"], timeout=60, check=True)
    subprocess.run(["rabbitmqctl", "-q", "start_app"], timeout=60, check=True)
    subprocess.run(
        ["rabbitmqctl", "-q", "await_startup", "--timeout", "60"], timeout=90, check=True
    )
    wait_until(
        lambda: "reconnected to RabbitMQ" in worker.output.text(),
        timeout_s=60,
        what="the worker to reconnect",
    )
    hand_off(amqp, [receiver.url("/ok")] * 3)

    assert len(amqp.take_outcomes(3, timeout_s=30)) == 3
    assert worker.proc.poll() is None
    assert receiver.stats()["unique_ids"] == 3


def metrics_port(proc: Controller) -> str:
    for line in proc.output.lines:
        if "metrics and health on port" in line:
            return line.rsplit(" ", 1)[-1]
    return ""


def test_worker_metrics_count_fired_and_outcomes_and_readiness(
    amqp: TestBroker, receiver: Receiver, workers: Workers
) -> None:
    worker = workers(amqp.env(METRICS_PORT="0", **FAST))
    worker.wait_started()
    port = int(wait_until(lambda: metrics_port(worker), timeout_s=10, what="the metrics port"))
    hand_off(amqp, [receiver.url("/ok"), receiver.url("/ok"), receiver.url("/status/404")])
    assert len(amqp.take_outcomes(3)) == 3

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        text = http.get("/metrics").text
        ready = http.get("/readyz").status_code

    assert "timer_worker_fired_total 3.0" in text
    assert 'timer_worker_outcomes_total{outcome="success"} 2.0' in text
    assert 'timer_worker_outcomes_total{outcome="final_status"} 1.0' in text
    assert "timer_worker_in_flight 0.0" in text
    assert "timer_worker_request_duration_seconds_count 3.0" in text
    assert ready == 200


def test_a_queue_declared_otherwise_ends_the_worker_with_one_line(amqp: TestBroker) -> None:
    prefix = amqp.prefix + "-classic"
    clash = TestBroker(prefix)
    clash.declare_classic(clash.topology.deliveries)
    try:
        result = run_cli({**amqp.env(**FAST), "AMQP_PREFIX": prefix}, "worker")
    finally:
        clash.delete()

    assert result.code == 1
    [line] = result.stderr_lines()
    assert line.startswith(
        f"timer-controller: RabbitMQ at amqp://guest:***@127.0.0.1:5672/: "
        f"cannot declare the {prefix}.* queues: "
    )
    assert "Traceback" not in result.output
