"""What one finished attempt tells the metrics and the log."""

from __future__ import annotations

import logging

from timer_controller.domain.task import ClaimedTask, Outcome, Status, Transition
from timer_controller.ops.metrics import Metrics

log = logging.getLogger(__name__)


def report(metrics: Metrics, task: ClaimedTask, outcome: Outcome, transition: Transition) -> None:
    """Count the attempt and log it: done, failed, or a retry and when."""
    m, klass = metrics, outcome.klass.value
    m.fired.labels(klass).inc()
    m.request_duration.observe(outcome.duration_s)
    lateness_s = None
    if outcome.fired_at is not None:
        lateness_s = max(0.0, (outcome.fired_at - task.due_at).total_seconds())
        m.lateness.observe(lateness_s)
    if transition.status is Status.DONE:
        m.done.inc()
        event, level = "done", logging.INFO
    elif transition.status is Status.FAILED:
        m.failed.labels(klass).inc()
        event, level = "failed", logging.WARNING
    else:
        m.retried.labels(klass).inc()
        event, level = "retry", logging.INFO
    if log.isEnabledFor(level):
        next_due_at = transition.next_due_at
        log.log(
            level,
            "task %d %s: %s (attempt %d)%s",
            task.id,
            event,
            outcome.error or f"HTTP {outcome.status_code}",
            task.attempt,
            f", next try at {next_due_at:%H:%M:%S.%f}Z" if next_due_at else "",
            extra={
                "event": event,
                "task_id": task.id,
                "attempt": task.attempt,
                "outcome": klass,
                "status_code": outcome.status_code,
                "error": outcome.error,
                "lateness_s": lateness_s,
                "duration_s": round(outcome.duration_s, 6),
                "next_due_at": next_due_at,
            },
        )
