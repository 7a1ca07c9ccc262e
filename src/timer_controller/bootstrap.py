"""Wiring: the one place that builds the engine, the client and the loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import secrets
import signal
import time

from sqlalchemy import Engine

from timer_controller.db.clock import DbClock
from timer_controller.db.repository import TaskRepository
from timer_controller.db.setup import current_revision_is_head
from timer_controller.delivery.dispatch import Dispatcher
from timer_controller.delivery.policy import TargetPolicy, parse_allowed_hosts
from timer_controller.delivery.request import USER_AGENT
from timer_controller.delivery.transport import GuardedAiohttpTransport, make_http_client
from timer_controller.ops.metrics import HealthServer, Metrics
from timer_controller.runtime.controller import Controller, LoopConfig
from timer_controller.runtime.upkeep import Upkeep
from timer_controller.settings import Settings
from timer_controller.startup import StopRequest, start_up

log = logging.getLogger(__name__)


def owner_id(pod_name: str) -> str:
    """Unique per process: a restarted pod with the same name must not
    mistake its predecessor's claims for its own."""
    return f"{pod_name[:200]}/{os.getpid()}-{secrets.token_hex(4)}"


def loop_config(settings: Settings, owner: str) -> LoopConfig:
    return LoopConfig(
        owner=owner,
        batch_size=settings.batch_size,
        max_in_flight=settings.max_in_flight,
        poll_interval_s=settings.poll_interval_s,
        lookahead_s=settings.claim_lookahead_s,
        lease_s=settings.lease_s,
        shutdown_grace_s=settings.shutdown_grace_s,
        max_attempts=settings.max_attempts,
        backoff_base_s=settings.retry_backoff_base_s,
        backoff_max_s=settings.retry_backoff_max_s,
        retry_number=settings.retry_number,
        reconnect_wait_s=settings.reconnect_wait_s,
        flush_interval_s=settings.flush_interval_s,
    )


def run_controller(settings: Settings) -> int:
    """Start-up (connect, create, migrate), then the loop; the process exit code."""
    started = start_up(settings)
    if started is None:
        return 0
    try:
        return asyncio.run(serve(settings, started.engine, early_stop=started.stop))
    finally:
        started.engine.dispose()


async def serve(
    settings: Settings, engine: Engine, *, early_stop: StopRequest | None = None
) -> int:
    repo = TaskRepository(engine)
    metrics = Metrics()
    clock = DbClock()
    policy = TargetPolicy(
        block_private_networks=settings.block_private_networks,
        allowed_hosts=parse_allowed_hosts(settings.allowed_hosts),
    )
    transport = GuardedAiohttpTransport(policy=policy, max_connections=settings.max_in_flight)
    client = make_http_client(
        timeout_s=settings.webhook_timeout_s,
        max_connections=settings.max_in_flight,
        follow_redirects=settings.follow_redirects,
        policy=policy,
        user_agent=USER_AGENT,
        transport=transport,
    )
    dispatcher = Dispatcher(
        client,
        transport=transport,
        follow_redirects=settings.follow_redirects,
        timeout_s=settings.webhook_timeout_s,
        policy=policy,
        keys=settings.signing_keys,
        max_body_bytes=settings.max_request_body_bytes,
        db_clock=clock.now,
    )
    owner = owner_id(settings.pod_name)
    controller = Controller(
        repo, dispatcher, loop_config(settings, owner), metrics=metrics, clock=clock
    )
    upkeep = Upkeep(
        repo,
        metrics,
        retention_s=settings.retention_s,
        cleanup_batch=settings.cleanup_batch,
        sample_backlog=settings.metrics_port is not None,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, stop, signum)
    if early_stop is not None and early_stop.signum is not None:
        _on_signal(stop, early_stop.signum)  # arrived between start-up and these handlers
    health = _start_health(settings, metrics, controller, repo, engine)
    log.info(
        "controller %s started: batch %d, up to %d in flight, poll %gs, look-ahead %gs",
        owner,
        settings.batch_size,
        settings.max_in_flight,
        settings.poll_interval_s,
        settings.claim_lookahead_s,
        extra={"event": "started", "owner": owner},
    )
    # Everything built so far lives as long as the process. Freezing it keeps
    # the collector's full passes, which stop the loop, from walking it again
    # and again: without this they took 50-160 ms here and made timers late.
    gc.collect()
    gc.freeze()
    chores = asyncio.create_task(upkeep.run(stop))
    try:
        code = await controller.run(stop)
    finally:
        stop.set()
        await chores
        await client.aclose()
        if health is not None:
            health.stop()
    log.info("controller %s stopped (exit %d)", owner, code, extra={"event": "stopped"})
    return code


def _on_signal(stop: asyncio.Event, signum: int) -> None:
    if not stop.is_set():
        log.info("%s received: stopping", signal.Signals(signum).name, extra={"event": "stopping"})
    stop.set()


def _start_health(
    settings: Settings,
    metrics: Metrics,
    controller: Controller,
    repo: TaskRepository,
    engine: Engine,
) -> HealthServer | None:
    if settings.metrics_port is None:
        return None
    stale_after_s = 3 * settings.poll_interval_s

    def alive() -> bool:
        return time.monotonic() - controller.last_tick <= stale_after_s

    def ready() -> bool:
        repo.ping()
        return current_revision_is_head(engine)

    health = HealthServer(metrics, port=settings.metrics_port, alive=alive, ready=ready)
    health.start()
    return health
