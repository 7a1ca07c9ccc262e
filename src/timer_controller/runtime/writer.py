"""Batched outcome writes: one UPDATE per outcome kind every few tens of ms.

A crash between a fire and its flush means the lease expires and the task
fires again: a repeat, never a loss. A write is never cancelled half way:
the store runs it on its own thread, and the final flush is awaited.

With DISPATCH=amqp an outcome arrives as a broker message; its ``on_commit``
(the ack) runs only once the batch holding it is committed. Such outcomes are
durable in their queue, and nothing but the ack waits for their write, so a
batch of them waits up to ``acked_linger_s`` to fill: with FLUSH_INTERVAL, the
stream of workers' outcome messages made half as full writes as direct mode's
bursts did (docs/amqp.md, Speed). Rows the write did not change (their
attempt was superseded or already recorded) are counted as stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from timer_controller.domain.task import Transition
from timer_controller.errors import DatabaseUnavailable, StorageError
from timer_controller.ops.metrics import Metrics
from timer_controller.runtime.ports import OutcomeStore

log = logging.getLogger(__name__)

OnCommit = Callable[[], Awaitable[None]]


class OutcomeWriter:
    def __init__(
        self,
        store: OutcomeStore,
        *,
        owner: str | None,
        flush_interval_s: float,
        flush_batch: int,
        retry_number: int,
        reconnect_wait_s: float,
        metrics: Metrics,
        acked_linger_s: float | None = None,
    ) -> None:
        self._store = store
        self._owner = owner
        self._interval_s = flush_interval_s
        #: How long a batch of acked outcomes only may wait to fill (``_gather``).
        self._acked_linger_s = max(flush_interval_s, acked_linger_s or 0.0)
        self._batch = flush_batch
        self._retry_number = retry_number
        self._reconnect_wait_s = reconnect_wait_s
        self._metrics = metrics
        self._pending: list[Transition] = []
        self._on_commit: list[OnCommit] = []
        self._wake = asyncio.Event()
        self._closing = False

    def add(self, transition: Transition, *, on_commit: OnCommit | None = None) -> None:
        self._pending.append(transition)
        if on_commit is not None:
            self._on_commit.append(on_commit)
        if len(self._pending) == 1 or len(self._pending) >= self._batch:
            self._wake.set()
        elif on_commit is None and self._on_commit:
            self._wake.set()  # the batch no longer waits as an acked one

    async def run(self) -> None:
        """Flush until ``close`` is called and all is written; raise DatabaseUnavailable."""
        while True:
            if not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if len(self._pending) < self._batch and not self._closing:
                await self._gather()
            await self._flush()

    async def _gather(self) -> None:
        """Give more outcomes the chance to join this batch before it is written.

        FLUSH_INTERVAL from the first; ``acked_linger_s`` while every outcome
        waiting is an acked one (each has its ``on_commit``). Outcome messages
        of two workers came about 40 ms apart at 2,700 timers/s, so waiting
        only while they kept coming within FLUSH_INTERVAL changed nothing.
        """
        loop = asyncio.get_running_loop()
        first_at = loop.time()
        while len(self._pending) < self._batch and not self._closing:
            acked_only = len(self._on_commit) == len(self._pending)
            linger_s = self._acked_linger_s if acked_only else self._interval_s
            left_s = first_at + linger_s - loop.time()
            if left_s <= 0:
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), left_s)

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        on_commit, self._on_commit = self._on_commit, []
        for attempt in range(1, self._retry_number + 1):
            try:
                written = await self._store.record(owner=self._owner, transitions=batch)
            except StorageError as exc:
                self._metrics.db_reconnects.inc()
                log.warning(
                    "recording %d outcomes failed (try %d of %d): %s",
                    len(batch),
                    attempt,
                    self._retry_number,
                    exc.reason,
                )
                if attempt < self._retry_number:
                    await asyncio.sleep(self._reconnect_wait_s)
                continue
            self._committed(len(batch), written)
            if on_commit:
                await asyncio.gather(*(ack() for ack in on_commit))
            return
        raise DatabaseUnavailable(
            f"could not record {len(batch)} outcomes after {self._retry_number} tries; "
            "their leases will expire and they will fire again"
        )

    def _committed(self, sent: int, written: int) -> None:
        self._metrics.outcomes_recorded.inc(written)
        if written < sent:
            self._metrics.outcomes_stale.inc(sent - written)
            log.info(
                "%d outcomes were stale (their attempt was superseded or already recorded)",
                sent - written,
                extra={"event": "stale_outcomes", "count": sent - written},
            )
