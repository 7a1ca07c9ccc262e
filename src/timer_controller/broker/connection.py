"""Connecting to RabbitMQ: bounded tries at start-up, reconnects with backoff after.

Start-up follows RETRY_NUMBER / RECONNECT_WAIT_TIME, then gives up with
``BrokerUnavailable`` (the process exits 1); a stop signal meanwhile ends the
tries at once (``StoppedConnecting``). Once connected, aio-pika's
robust connection restores channels, queues and consumers after the broker
restarts; ``_BackoffConnection`` spaces its attempts out as an outage lasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Coroutine
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import CONNECTION_EXCEPTIONS

from timer_controller.errors import BrokerUnavailable, StoppedConnecting

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
#: Longest pause between reconnect attempts during a long outage.
MAX_RECONNECT_WAIT_S = 30.0


def reconnect_wait_s(base_s: float, outage_s: float) -> float:
    """Half as long as the outage has lasted so far, within [base, 30 s].

    A function of the outage's age, not of a counter, so reading it twice
    (aio-pika logs it, then sleeps it) gives the same answer.
    """
    return min(max(base_s, outage_s / 2), max(base_s, MAX_RECONNECT_WAIT_S))


class _BackoffConnection(aio_pika.RobustConnection):
    _base_wait_s = 1.0
    _down_since: float | None = None

    @property
    def reconnect_interval(self) -> float:
        if self._down_since is None:
            return self._base_wait_s
        return reconnect_wait_s(self._base_wait_s, time.monotonic() - self._down_since)

    @reconnect_interval.setter
    def reconnect_interval(self, value: float) -> None:
        self._base_wait_s = float(value)

    async def _on_connection_close(self, closing: asyncio.Future[Any]) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()
        await super()._on_connection_close(closing)

    async def _on_connected(self) -> None:
        await super()._on_connected()
        if self._down_since is not None:
            log.info(
                "reconnected to RabbitMQ after %.1fs",
                time.monotonic() - self._down_since,
                extra={"event": "broker_reconnected"},
            )
        self._down_since = None


async def connect(
    url: str,
    *,
    shown_as: str,
    tries: int,
    wait_s: float,
    name: str,
    stop: asyncio.Event | None = None,
) -> AbstractRobustConnection:
    """A robust connection to ``url``; BrokerUnavailable after ``tries`` failures.

    ``shown_as`` is the URL without its password: the only form logged. Once
    ``stop`` is set, a try in progress and the waits between tries end at
    once with ``StoppedConnecting``: a SIGTERM during an outage at start-up
    was otherwise held until every try had failed (RETRY_NUMBER ×
    RECONNECT_WAIT_TIME), or killed a worker, which had no handler yet.
    """
    stop = stop if stop is not None else asyncio.Event()
    reason = ""
    for attempt in range(1, tries + 1):
        connection = _BackoffConnection(
            aio_pika.connection.make_url(url),
            reconnect_interval=wait_s,
            client_properties={"connection_name": name},
        )
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                if await _first_of(connection.connect(timeout=CONNECT_TIMEOUT_S), stop):
                    return connection
        except (*CONNECTION_EXCEPTIONS, TimeoutError) as exc:
            reason = describe(exc)
        await _close_quietly(connection)
        if stop.is_set():
            raise StoppedConnecting(f"stopped while connecting to RabbitMQ at {shown_as}")
        log.warning(
            "RabbitMQ at %s unreachable (try %d of %d): %s", shown_as, attempt, tries, reason
        )
        if attempt < tries:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait_s)
    raise BrokerUnavailable(f"RabbitMQ at {shown_as} unreachable after {tries} tries: {reason}")


async def _first_of(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``work`` until done (True) or until ``stop`` is set (False: ``work`` cancelled)."""
    if stop.is_set():
        work.close()
        return False
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        return False
    task.result()  # raises the connection's error
    return True


def describe(exc: BaseException) -> str:
    """A short reason, never the URL (it may carry a password)."""
    if isinstance(exc, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT_S:g}s"
    if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
        return "login refused (check the user and password in AMQP_URL)"
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return "connection refused"
    text = str(exc).strip() or type(exc).__name__
    return text[:200]


async def _close_quietly(connection: AbstractRobustConnection) -> None:
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await connection.close()
    except Exception as exc:  # closing a connection that never opened
        log.debug("closing a failed connection: %s", exc)
