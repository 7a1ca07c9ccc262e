"""``attempts`` counts requests that may have been sent, and no others.

Claims taken ahead (LOOKAHEAD) hold short leases that their pod renews; a
lease that ends before the due time proves the pod was gone before it could
send, so the sweep returns the task with its attempt unspent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from tests.e2e.test_failures import fired, insert_tasks, rows, statuses
from tests.support.databases import TestDatabase
from tests.support.processes import Controller, Receiver
from tests.support.waiting import wait_until

Start = Callable[..., Controller]
# Claims reach 8 s ahead; leases last 3 s unless renewed.
AHEAD = {
    "LOOKAHEAD": "8",
    "LEASE_TIME": "3",
    "WEBHOOK_TIMEOUT": "1",
    "POLL_INTERVAL": "0.1",
    "RETRY_BACKOFF_BASE": "0.2",
    "RETRY_BACKOFF_MAX": "0.5",
}


def test_claims_killed_before_their_due_time_fire_again_with_every_attempt(
    db: TestDatabase, receiver: Receiver, controllers: Start
) -> None:
    env = db.env(MAX_ATTEMPTS="2", **AHEAD)
    pod_a = controllers(env)
    pod_a.wait_started()
    ids = insert_tasks(db.engine, receiver.url("/status/500"), [6.0] * 10)
    wait_until(
        lambda: statuses(db.engine, ids) == Counter({"claimed": len(ids)}),
        timeout_s=30,
        what="pod A to claim all ten ahead of time",
    )
    pod_a.kill()
    assert pod_a.wait(10) == -9
    assert fired(receiver) == Counter(), "A sent before the due time"

    pod_b = controllers(env)
    wait_until(
        lambda: statuses(db.engine, ids) == Counter({"failed": len(ids)}),
        timeout_s=60,
        what="every task to fail after all its attempts",
    )
    assert {r.attempts for r in rows(db.engine, ids).values()} == {2}
    # Two real requests each: A's lost claim spent nothing.
    assert fired(receiver) == Counter(dict.fromkeys(ids, 2))
    assert "leases expired" in pod_b.output.text()


def test_a_live_pod_keeps_claims_longer_than_their_lease_by_renewing_them(
    db: TestDatabase, receiver: Receiver, controllers: Start
) -> None:
    env = db.env(**AHEAD)
    pods = [controllers(env), controllers(env)]
    for pod in pods:
        pod.wait_started()
    ids = insert_tasks(db.engine, receiver.url("/ok"), [6.0] * 20)

    wait_until(
        lambda: statuses(db.engine, ids) == Counter({"done": len(ids)}),
        timeout_s=60,
        what="every task done",
    )
    # Held twice as long as a lease, never swept from a live pod, sent once.
    assert fired(receiver) == Counter(dict.fromkeys(ids, 1))
    assert {r.attempts for r in rows(db.engine, ids).values()} == {1}
    for pod in pods:
        assert "leases expired" not in pod.output.text()
