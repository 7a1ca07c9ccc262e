"""Wiring for DISPATCH=amqp: the worker process, and the controller's broker side.

The worker never touches the database: it reads no DB_* and opens no
database connection. Times it reports (``fired_at``) are its own UTC clock.
Imported only when the broker is in use, so direct mode never loads aio-pika.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from datetime import UTC, datetime

from timer_controller.bootstrap import from_settings, make_dispatcher, run_on_uvloop
from timer_controller.broker.client import BrokerClient
from timer_controller.broker.connection import connect
from timer_controller.broker.links import ControllerLink, WorkerLink
from timer_controller.broker.topology import Topology
from timer_controller.domain.retry import RetryPolicy
from timer_controller.errors import BrokerError, BrokerUnavailable, StoppedConnecting
from timer_controller.ops.metrics import HealthServer, Metrics, WorkerMetrics
from timer_controller.runtime.controller import LoopConfig
from timer_controller.runtime.handoff import HandOff, HandOffConfig, HandOffController
from timer_controller.runtime.intake import OutcomeIntake
from timer_controller.runtime.ports import ClaimStore, DbClock
from timer_controller.runtime.worker import Worker, WorkerConfig
from timer_controller.runtime.writer import OutcomeWriter
from timer_controller.settings import Settings, WorkerSettings

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def run_worker(settings: WorkerSettings) -> int:
    """The process exit code: 0 after a graceful stop; BrokerUnavailable propagates."""
    return run_on_uvloop(serve_worker(settings))


async def open_broker(
    settings: Settings | WorkerSettings, *, name: str, stop: asyncio.Event
) -> BrokerClient:
    """Connected (within RETRY_NUMBER tries, else BrokerUnavailable), queues declared.

    ``stop`` set meanwhile: ``StoppedConnecting``.
    """
    assert settings.amqp_url is not None  # validated by the settings
    connection = await connect(
        settings.amqp_url.get_secret_value(),
        shown_as=settings.amqp_url_redacted,
        tries=settings.retry_number,
        wait_s=settings.reconnect_wait_s,
        name=name,
        stop=stop,
    )
    client = BrokerClient(connection, Topology(settings.amqp_prefix))
    try:
        await client.open()
    except BrokerError as exc:
        await client.close()
        raise BrokerUnavailable(f"RabbitMQ at {settings.amqp_url_redacted}: {exc}") from None
    return client


class ControllerSide:
    """A controller's broker: its hand-offs out and every controller's outcomes in."""

    def __init__(self, client: BrokerClient, settings: Settings, metrics: Metrics) -> None:
        self.client = client
        self._link = ControllerLink(client)
        self._settings = settings
        self.handoff = HandOff(
            self._link,
            from_settings(
                HandOffConfig,
                settings,
                publish_tries=settings.retry_number,
                publish_wait_s=settings.reconnect_wait_s,
                webhook_timeout_s=settings.webhook_timeout_s,
            ),
            meter=metrics,
        )
        self._metrics = metrics
        self._controller: HandOffController | None = None
        self._intake: OutcomeIntake | None = None

    @classmethod
    async def open(
        cls, settings: Settings, metrics: Metrics, *, owner: str, stop: asyncio.Event
    ) -> ControllerSide:
        return cls(await open_broker(settings, name=owner, stop=stop), settings, metrics)

    def controller(
        self,
        claims: ClaimStore,
        writer: OutcomeWriter,
        config: LoopConfig,
        *,
        retry: RetryPolicy,
        db_now: DbClock,
    ) -> HandOffController:
        self._controller = HandOffController(
            claims, self.handoff, writer, config, retry=retry, metrics=self._metrics, db_now=db_now
        )
        return self._controller

    async def start_intake(self, *, prefetch: int) -> None:
        """Outcomes from every worker, recorded by this process's controller."""
        assert self._controller is not None, "build the controller first"
        self._intake = OutcomeIntake(self._link, self._controller, prefetch=prefetch)
        await self._intake.start()

    async def stop_intake_on(self, stop: asyncio.Event) -> None:
        """Once ``stop`` is set, no new outcomes: the writer's last flush acks the rest."""
        await stop.wait()
        if self._intake is not None:
            await self._intake.stop()

    async def close(self) -> None:
        await self.client.close()


async def serve_worker(settings: WorkerSettings) -> int:
    name = f"{settings.pod_name[:200]}/{os.getpid()} worker"
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, stop, signum)
    try:
        client = await open_broker(settings, name=name, stop=stop)
    except StoppedConnecting:
        log.info("stopped during start-up, before the worker started", extra={"event": "stopped"})
        return 0
    try:
        dispatcher, close_http = make_dispatcher(
            settings, max_connections=settings.worker_concurrency, clock=utc_now
        )
        metrics = WorkerMetrics()
        worker = Worker(
            WorkerLink(client),
            dispatcher,
            WorkerConfig(
                concurrency=settings.worker_concurrency,
                shutdown_grace_s=settings.shutdown_grace_s,
                publish_tries=settings.retry_number,
                publish_wait_s=settings.reconnect_wait_s,
                webhook_timeout_s=settings.webhook_timeout_s,
            ),
            meter=metrics,
        )
        health = _start_health(settings, metrics, worker, client)
        log.info(
            "worker %s started: up to %d in flight, queue %s, broker %s",
            name,
            settings.worker_concurrency,
            client.topology.deliveries,
            settings.amqp_url_redacted,
            extra={"event": "started"},
        )
        try:
            code = await worker.run(stop)
        finally:
            await close_http()
            if health is not None:
                health.stop()
    finally:
        await client.close()
    log.info("worker %s stopped (exit %d)", name, code, extra={"event": "stopped"})
    return code


def _on_signal(stop: asyncio.Event, signum: int) -> None:
    if not stop.is_set():
        log.info("%s received: stopping", signal.Signals(signum).name, extra={"event": "stopping"})
    stop.set()


def _start_health(
    settings: WorkerSettings, metrics: WorkerMetrics, worker: Worker, client: BrokerClient
) -> HealthServer | None:
    if settings.metrics_port is None:
        return None

    def alive() -> bool:
        return time.monotonic() - worker.last_tick <= 5.0

    def ready() -> bool:
        return client.connected

    health = HealthServer(metrics, port=settings.metrics_port, alive=alive, ready=ready)
    health.start()
    return health
