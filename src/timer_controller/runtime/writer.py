"""Batched outcome writes: one UPDATE per outcome kind every few tens of ms.

A crash between a fire and its flush means the lease expires and the task
fires again: a repeat, never a loss. A write is never cancelled half way:
the database call runs on its own thread and the final flush is awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.exc import DBAPIError

from timer_controller.db.repository import OutcomeRecord, TaskRepository
from timer_controller.ops.metrics import Metrics

log = logging.getLogger(__name__)


class DatabaseLost(Exception):
    """The database stayed unreachable through every allowed retry."""


class OutcomeWriter:
    def __init__(
        self,
        repo: TaskRepository,
        *,
        owner: str,
        flush_interval_s: float,
        flush_batch: int,
        retry_number: int,
        reconnect_wait_s: float,
        metrics: Metrics,
    ) -> None:
        self._repo = repo
        self._owner = owner
        self._interval_s = flush_interval_s
        self._batch = flush_batch
        self._retry_number = retry_number
        self._reconnect_wait_s = reconnect_wait_s
        self._metrics = metrics
        self._pending: list[OutcomeRecord] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="writer")

    def add(self, record: OutcomeRecord) -> None:
        self._pending.append(record)
        if len(self._pending) == 1 or len(self._pending) >= self._batch:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """Flush until ``close`` is called and all is written; raise DatabaseLost."""
        try:
            while True:
                if not self._pending:
                    if self._closing:
                        return
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if len(self._pending) < self._batch and not self._closing:
                    # Give a few more outcomes the chance to join this batch.
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._interval_s)
                await self._flush()
        finally:
            self._executor.shutdown(wait=False)

    def close(self) -> None:
        self._closing = True
        self._wake.set()

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, []
        loop = asyncio.get_running_loop()
        for attempt in range(1, self._retry_number + 1):
            try:
                await asyncio.shield(
                    loop.run_in_executor(
                        self._executor,
                        lambda: self._repo.record_outcomes(owner=self._owner, outcomes=batch),
                    )
                )
                return
            except DBAPIError as exc:
                self._metrics.db_reconnects.inc()
                log.warning(
                    "recording %d outcomes failed (try %d of %d): %s",
                    len(batch),
                    attempt,
                    self._retry_number,
                    str(exc.orig)[:200],
                )
                if attempt < self._retry_number:
                    await asyncio.sleep(self._reconnect_wait_s)
        raise DatabaseLost(
            f"could not record {len(batch)} outcomes after {self._retry_number} tries; "
            "their leases will expire and they will fire again"
        )
