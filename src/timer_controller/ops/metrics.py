"""Prometheus metrics, and the small HTTP server for /metrics, /healthz, /readyz."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from timer_controller.domain.task import Outcome
from timer_controller.ops.http_server import Answer, BoundedHttpServer
from timer_controller.ops.probe import READY_DEADLINE_S, DeadlineCheck

log = logging.getLogger(__name__)
TEXT = "text/plain"

_LATENESS_BUCKETS_S = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
)
_DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    """The controller's metrics, in a registry of their own (tests build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.claimed = Counter("timer_tasks_claimed", "Tasks claimed", registry=r)
        self.fired = Counter("timer_tasks_fired", "Delivery attempts made", ["outcome"], registry=r)
        self.done = Counter("timer_tasks_done", "Tasks done (2xx)", registry=r)
        self.failed = Counter(
            "timer_tasks_failed", "Tasks failed for good", ["outcome"], registry=r
        )
        self.retried = Counter(
            "timer_tasks_retried", "Attempts scheduled again", ["outcome"], registry=r
        )
        self.released = Counter("timer_tasks_released", "Claims handed back unfired", registry=r)
        self.lateness = Histogram(
            "timer_lateness_seconds",
            "Fire time minus due_at",
            buckets=_LATENESS_BUCKETS_S,
            registry=r,
        )
        self.request_duration = Histogram(
            "timer_request_duration_seconds",
            "Webhook request duration",
            buckets=_DURATION_BUCKETS_S,
            registry=r,
        )
        self.in_flight = Gauge("timer_requests_in_flight", "Requests being sent now", registry=r)
        self.held = Gauge("timer_tasks_held", "Claimed tasks not yet recorded", registry=r)
        self.backlog = Gauge(
            "timer_backlog_tasks", "Due tasks not yet claimed (sampled)", registry=r
        )
        # Per destination, without a label per host (unbounded cardinality):
        # the busiest one's count and how many are at their limit.
        self.destination_busiest = Gauge(
            "timer_destination_in_flight_max",
            "Tasks held (waiting to fire or being sent) by the busiest destination",
            registry=r,
        )
        self.destinations_at_limit = Gauge(
            "timer_destinations_at_limit",
            "Destinations holding MAX_IN_FLIGHT_PER_HOST tasks",
            registry=r,
        )
        self.deferred = Counter(
            "timer_tasks_deferred",
            "Claims handed back unspent because their destination was at its limit",
            registry=r,
        )
        self.db_reconnects = Counter(
            "timer_db_reconnects",
            "Database operations retried after a connection error",
            registry=r,
        )
        # DISPATCH=amqp (docs/amqp.md).
        self.handoffs_published = Counter(
            "timer_handoffs_published", "Hand-offs sent to the broker", registry=r
        )
        self.handoffs_confirmed = Counter(
            "timer_handoffs_confirmed", "Hand-offs the broker confirmed", registry=r
        )
        self.outcomes_recorded = Counter(
            "timer_outcomes_recorded", "Outcomes from workers committed", registry=r
        )
        self.outcomes_stale = Counter(
            "timer_outcomes_stale",
            "Outcomes dropped: their attempt was superseded or already recorded",
            registry=r,
        )

    def published(self) -> None:
        self.handoffs_published.inc()

    def confirmed(self) -> None:
        self.handoffs_confirmed.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class WorkerMetrics:
    """``timer-controller worker``'s metrics (``runtime.worker.WorkerMeter``)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.fired = Counter("timer_worker_fired", "Webhook requests started", registry=r)
        self.outcomes = Counter(
            "timer_worker_outcomes", "Delivery attempts ended, by class", ["outcome"], registry=r
        )
        self.in_flight = Gauge("timer_worker_in_flight", "Requests being sent now", registry=r)
        self.request_duration = Histogram(
            "timer_worker_request_duration_seconds",
            "Webhook request duration",
            buckets=_DURATION_BUCKETS_S,
            registry=r,
        )
        self.poison = Counter(
            "timer_worker_poison_messages", "Malformed hand-offs dead-lettered", registry=r
        )

    def started(self) -> None:
        self.fired.inc()
        self.in_flight.inc()

    def finished(self, outcome: Outcome) -> None:
        self.in_flight.dec()
        self.outcomes.labels(outcome.klass.value).inc()
        self.request_duration.observe(outcome.duration_s)

    def poisoned(self) -> None:
        self.poison.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class Renders(Protocol):
    def render(self) -> bytes: ...


class HealthServer:
    """Serves /metrics, /healthz and /readyz from one thread (see http_server.py).

    ``alive`` and ``ready`` are called per request. ``ready`` may touch the
    database: it runs on a thread of its own and counts as not ready when it
    has no answer within ``ready_deadline_s``, so a silent database never
    holds the server's one worker (and /metrics, /healthz behind it).
    """

    def __init__(
        self,
        metrics: Renders,
        *,
        port: int,
        alive: Callable[[], bool],
        ready: Callable[[], bool],
        host: str = "0.0.0.0",
        ready_deadline_s: float = READY_DEADLINE_S,
    ) -> None:
        self._ready = DeadlineCheck(ready, deadline_s=ready_deadline_s)
        self._server = BoundedHttpServer(_router(metrics, alive, self._ready), host=host, port=port)

    @property
    def port(self) -> int:
        return self._server.port

    def start(self) -> None:
        self._server.start()
        log.info("metrics and health on port %d", self.port)

    def stop(self) -> None:
        self._server.stop()
        self._ready.close()


def _router(
    metrics: Renders, alive: Callable[[], bool], ready: Callable[[], bool]
) -> Callable[[str], Answer]:
    def answer(path: str) -> Answer:
        if path == "/metrics":
            return 200, metrics.render(), CONTENT_TYPE_LATEST
        if path == "/healthz":
            ok = alive()
            return (200, b"ok\n", TEXT) if ok else (503, b"loop stalled\n", TEXT)
        if path == "/readyz":
            ok = ready()  # a DeadlineCheck: never raises, never blocks past its deadline
            return (200, b"ready\n", TEXT) if ok else (503, b"not ready\n", TEXT)
        return 404, b"not found\n", TEXT

    return answer
