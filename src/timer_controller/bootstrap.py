"""Wiring: the one place that builds the engine, the client and the loop.

Nothing else constructs a dependency of another room: the controller, the
writer and upkeep receive theirs from here.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import URL, Engine

from timer_controller.db.clock import DbClock
from timer_controller.db.facade import AsyncStorage
from timer_controller.db.repository import TaskRepository
from timer_controller.db.setup import current_revision_is_head, prepare, server_url
from timer_controller.delivery.dispatch import Dispatcher, Exchanger, Send
from timer_controller.delivery.policy import TargetPolicy, parse_allowed_hosts
from timer_controller.delivery.redirects import RedirectingSender
from timer_controller.delivery.transport import GuardedAiohttpTransport
from timer_controller.domain.retry import RetryPolicy
from timer_controller.errors import StartupError, StoppedConnecting
from timer_controller.ops.metrics import HealthServer, Metrics
from timer_controller.runtime.controller import Controller, LoopConfig
from timer_controller.runtime.upkeep import Upkeep, UpkeepConfig
from timer_controller.runtime.writer import OutcomeWriter
from timer_controller.settings import Settings, WorkerSettings
from timer_controller.startup import Started, StopRequest, start_up

if TYPE_CHECKING:
    from timer_controller.bootstrap_amqp import ControllerSide

log = logging.getLogger(__name__)

C = TypeVar("C")
# Outcomes per write: enough to amortise a transaction, small enough that
# one UPDATE's id list stays short.
FLUSH_BATCH = 500
#: DISPATCH=amqp: how long a batch of workers' outcomes may wait to fill
#: (``OutcomeWriter``); their queue holds them meanwhile.
ACKED_LINGER_S = 0.25
#: Seconds a thread holding the interpreter keeps it while another waits (see run_controller).
SWITCH_INTERVAL_S = 0.0005


def owner_id(pod_name: str) -> str:
    """Unique per process: a restarted pod with the same name must not
    mistake its predecessor's claims for its own."""
    return f"{pod_name[:200]}/{os.getpid()}-{secrets.token_hex(4)}"


def from_settings(cls: type[C], settings: Settings, **given: Any) -> C:
    """A config dataclass whose fields are named as the settings are."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return cls(**{n: given[n] if n in given else getattr(settings, n) for n in names})


def database_url(settings: Settings, *, database: str | None) -> URL:
    return server_url(
        host=settings.db_host,
        port=settings.db_port,
        user=settings.db_user,
        password=settings.db_password.get_secret_value(),
        database=database,
    )


def prepare_database(
    settings: Settings,
    *,
    stop: threading.Event | None = None,
    migrating: threading.Event | None = None,
    **engine_options: Any,
) -> Engine:
    """Start-up: reach the server (with retries), create the database, migrate."""
    return prepare(
        database_url(settings, database=None),
        settings.db_name,
        tries=settings.retry_number,
        wait_s=settings.reconnect_wait_s,
        db_timeout_s=settings.db_timeout_s,
        stop=stop,
        migrating=migrating,
        **engine_options,
    )


def start_database(settings: Settings) -> Started | None:
    """``prepare_database`` that SIGTERM/SIGINT can end; None if one did (see startup.py)."""
    return start_up(
        lambda stop, migrating: prepare_database(settings, stop=stop, migrating=migrating),
        settle_s=settings.db_timeout_s,
    )


def run_on_uvloop(main: Coroutine[Any, Any, int]) -> int:
    """``asyncio.run`` on uvloop where it is installed (every process but the api's).

    The event loop's thread is where a pod spends most of its CPU. On uvloop
    its timers, callbacks and socket calls cost less: at the shipped defaults
    a controller's CPU per timer fell by about a tenth, and most of a
    worker's went to the default loop's socket writes (docs/benchmarks.md,
    docs/amqp.md). uvloop's timers may wake up to a millisecond early, so
    whatever must not start before its time waits with ``waits.not_before``.
    """
    if sys.platform == "win32":  # uvloop is not installed there
        return asyncio.run(main)
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def run_controller(settings: Settings) -> int:
    """Start-up (connect, create, migrate), then the loop; the process exit code."""
    started = start_database(settings)
    if started is None:
        return 0
    # A claim or an outcome write back from the database waits for the event
    # loop to let go of the interpreter: at most this long, not Python's 5 ms.
    # A claim is three driver calls, and at BATCH_SIZE=10 the loop claims one
    # after the other, so those waits were most of a claim's time.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        main = serve(settings, started.engine, early_stop=started.stop)
        return run_on_uvloop(main)
    finally:
        started.engine.dispose()


def make_sender(
    settings: Settings | WorkerSettings, policy: TargetPolicy, *, max_connections: int
) -> tuple[Send | Exchanger, Callable[[], Awaitable[None]]]:
    """The one send path, chosen once: the transport, or (FOLLOW_REDIRECTS) a
    RedirectingSender over it that leaves redirect bodies unread; and what closes it."""
    transport = GuardedAiohttpTransport(policy=policy, max_connections=max_connections)
    # Start-up work belongs before the first claim, not in the first timer's way.
    transport.open()
    if not settings.follow_redirects:
        return transport, transport.aclose
    return RedirectingSender(transport, policy=policy), transport.aclose


def make_dispatcher(
    settings: Settings | WorkerSettings, *, max_connections: int, clock: Callable[[], datetime]
) -> tuple[Dispatcher, Callable[[], Awaitable[None]]]:
    """The one dispatcher both DISPATCH modes fire through, and what closes it."""
    policy = TargetPolicy(
        block_private_networks=settings.block_private_networks,
        allowed_hosts=parse_allowed_hosts(settings.allowed_hosts),
    )
    send, close_sender = make_sender(settings, policy, max_connections=max_connections)
    dispatcher = Dispatcher(
        send,
        timeout_s=settings.webhook_timeout_s,
        policy=policy,
        keys=settings.signing_keys,
        max_body_bytes=settings.max_request_body_bytes,
        db_clock=clock,
    )
    return dispatcher, close_sender


async def serve(
    settings: Settings, engine: Engine, *, early_stop: StopRequest | None = None
) -> int:
    repo = TaskRepository(engine, max_body_bytes=settings.max_request_body_bytes)
    metrics = Metrics()
    clock = DbClock()
    storage = AsyncStorage(repo, clock)
    owner = owner_id(settings.pod_name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, stop, signum)
    if early_stop is not None and early_stop.signum is not None:
        _on_signal(stop, early_stop.signum)  # arrived between start-up and these handlers
    amqp: ControllerSide | None = None
    if settings.dispatch == "amqp":
        # Imported only now: direct mode never loads aio-pika.
        from timer_controller.bootstrap_amqp import ControllerSide

        try:
            amqp = await ControllerSide.open(settings, metrics, owner=owner, stop=stop)
        except StoppedConnecting:
            storage.close()
            log.info(
                "stopped during start-up, before the controller started",
                extra={"event": "stopped"},
            )
            return 0
        except BaseException:
            storage.close()
            raise
    writer = OutcomeWriter(
        storage,
        # In amqp mode any controller records any task's outcome: by attempt only.
        owner=owner if amqp is None else None,
        flush_interval_s=settings.flush_interval_s,
        flush_batch=FLUSH_BATCH,
        retry_number=settings.retry_number,
        reconnect_wait_s=settings.reconnect_wait_s,
        metrics=metrics,
        acked_linger_s=None if amqp is None else ACKED_LINGER_S,
    )
    config = from_settings(
        LoopConfig,
        settings,
        owner=owner,
        lookahead_s=settings.claim_lookahead_s,
        # A handed-off task stays claimed while queued (docs/amqp.md, "Leases").
        lease_s=settings.lease_s if amqp is None else settings.queue_lease_s,
    )
    retry = from_settings(
        RetryPolicy,
        settings,
        base_s=settings.retry_backoff_base_s,
        max_s=settings.retry_backoff_max_s,
    )
    controller: Controller
    if amqp is None:
        dispatcher, close_sender = make_dispatcher(
            settings, max_connections=settings.max_in_flight, clock=clock.now
        )
        controller = Controller(
            storage, dispatcher, writer, config, retry=retry, metrics=metrics, db_now=clock.now
        )
    else:
        controller = amqp.controller(storage, writer, config, retry=retry, db_now=clock.now)
        close_sender = amqp.close
    upkeep = Upkeep(
        storage,
        metrics,
        from_settings(UpkeepConfig, settings, sample_backlog=settings.metrics_port is not None),
    )
    try:
        health = _start_health(settings, metrics, controller, repo, engine, amqp)
    except StartupError:
        storage.close()
        await close_sender()
        raise
    log.info(
        "controller %s started: %s dispatch, batch %d, up to %d in flight, poll %gs, "
        "look-ahead %gs",
        owner,
        settings.dispatch,
        settings.batch_size,
        settings.max_in_flight,
        settings.poll_interval_s,
        settings.claim_lookahead_s,
        extra={"event": "started", "owner": owner},
    )
    await storage.open_lanes()
    # Everything built so far lives as long as the process. Freezing it keeps
    # the collector's full passes, which stop the loop, from walking it again
    # and again: without this they took 50-160 ms here and made timers late.
    gc.collect()
    gc.freeze()
    chores = asyncio.create_task(upkeep.run(stop))
    intake_stopper = None
    if amqp is not None:
        await amqp.start_intake(prefetch=2 * FLUSH_BATCH)
        intake_stopper = asyncio.create_task(amqp.stop_intake_on(stop))
    try:
        code = await controller.run(stop)
    finally:
        stop.set()
        await chores
        if intake_stopper is not None:
            await intake_stopper
        storage.close()
        await close_sender()
        if health is not None:
            health.stop()
    log.info("controller %s stopped (exit %d)", owner, code, extra={"event": "stopped"})
    if controller.gave_up:
        # A storage thread still inside a driver call would hold the exit for
        # up to one more DB_TIMEOUT; the leases already cover what it held.
        logging.shutdown()
        os._exit(code)
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
    amqp: ControllerSide | None = None,
) -> HealthServer | None:
    if settings.metrics_port is None:
        return None
    stale_after_s = 3 * settings.poll_interval_s

    def alive() -> bool:
        return time.monotonic() - controller.last_tick <= stale_after_s

    def ready() -> bool:
        if amqp is not None and not amqp.client.connected:
            return False  # it could neither hand off nor record outcomes
        repo.ping()
        return current_revision_is_head(engine)

    try:
        health = HealthServer(metrics, port=settings.metrics_port, alive=alive, ready=ready)
    except OSError as exc:
        raise StartupError(
            f"METRICS_PORT={settings.metrics_port}: cannot listen there "
            f"({exc.strerror or exc}); is the port taken by another process?"
        ) from None
    health.start()
    return health


# -- the api (timer-controller api) --------------------------------------------

#: Blocking route functions run on this many threads, each with a pooled
#: connection of its own (a pool smaller than this opened and closed overflow
#: connections all the time). Enough to fill a commit group; more only
#: contend for the interpreter.
API_THREADS = 16
#: The wait for a free connection; a statement's read or write is bounded by
#: DB_TIMEOUT. A database that hangs becomes a 503 within these, not a
#: request that never ends.
API_POOL_TIMEOUT_S = 5


def run_api(settings: Settings) -> int:
    """Listen, start up as the controller does (connect, create, migrate), serve."""
    from timer_controller.api.app import create_app
    from timer_controller.api.server import bound_port, listen, serve
    from timer_controller.api.ui.mount import ui_router
    from timer_controller.api.validation import TimerRules
    from timer_controller.db.timers import TimerStore

    sock = listen(settings.api_host, settings.api_port)
    try:
        engine = prepare_database(
            settings,
            pool_size=API_THREADS,
            pool_timeout_s=API_POOL_TIMEOUT_S,
            # The store and the dashboard use Connections only, which end their
            # transactions themselves: no ROLLBACK after every COMMIT.
            reset_on_return=False,
        )
        try:
            store = TimerStore(engine)
            rules = TimerRules(
                policy=TargetPolicy(
                    block_private_networks=settings.block_private_networks,
                    allowed_hosts=parse_allowed_hosts(settings.allowed_hosts),
                ),
                max_body_bytes=settings.max_request_body_bytes,
                max_horizon_s=settings.api_max_horizon_s,
                default_max_attempts=settings.max_attempts,
            )

            def ready() -> bool:
                store.ping()
                return current_revision_is_head(engine)

            app = create_app(store=store, tokens=settings.bearer_tokens, rules=rules, ready=ready)
            app.include_router(ui_router(app, engine=engine, tokens=settings.bearer_tokens))
            log.info(
                "api listening on http://%s:%d",
                settings.api_host,
                bound_port(sock),
                extra={"event": "api_started", "port": bound_port(sock)},
            )
            return serve(app, sock, threads=API_THREADS, grace_s=settings.shutdown_grace_s)
        finally:
            engine.dispose()
    finally:
        sock.close()
