"""Wiring for ``timer-controller worker``: the broker, the dispatcher, the loop.

The worker never touches the database: it reads no DB_* and imports no
database module. Times it reports (``fired_at``) are its own UTC clock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from datetime import UTC, datetime

from timer_controller.bootstrap import make_dispatcher
from timer_controller.broker.client import BrokerClient
from timer_controller.broker.connection import connect
from timer_controller.broker.links import WorkerLink
from timer_controller.broker.topology import Topology
from timer_controller.ops.metrics import HealthServer, WorkerMetrics
from timer_controller.runtime.worker import Worker, WorkerConfig
from timer_controller.settings import WorkerSettings

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def run_worker(settings: WorkerSettings) -> int:
    """The process exit code: 0 after a graceful stop; BrokerUnavailable propagates."""
    return asyncio.run(serve_worker(settings))


async def serve_worker(settings: WorkerSettings) -> int:
    assert settings.amqp_url is not None  # validated by WorkerSettings
    name = f"{settings.pod_name[:200]}/{os.getpid()} worker"
    connection = await connect(
        settings.amqp_url.get_secret_value(),
        shown_as=settings.amqp_url_redacted,
        tries=settings.retry_number,
        wait_s=settings.reconnect_wait_s,
        name=name,
    )
    client = BrokerClient(connection, Topology(settings.amqp_prefix))
    try:
        await client.open()
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
            ),
            meter=metrics,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, _on_signal, stop, signum)
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
