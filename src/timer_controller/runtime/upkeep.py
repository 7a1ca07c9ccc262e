"""Maintenance beside the claim loop: the lease sweep, retention, the backlog gauge.

Rescue is maintenance, not fetching: the sweep that returns expired claims
runs here on its own schedule, so the claim loop only claims, and a failed
sweep is a skipped sweep, never a failed claim. Each chore runs on a
storage lane of its own (``db/facade.py``), so a long purge delays nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from timer_controller.errors import StorageError
from timer_controller.ops.metrics import Metrics
from timer_controller.runtime.ports import UpkeepStore

log = logging.getLogger(__name__)

RETENTION_EVERY_S = 60.0
BACKLOG_EVERY_S = 10.0
# Between delete batches: lets claims and writes take the locks they need.
CLEANUP_PAUSE_S = 0.05


@dataclass(frozen=True, slots=True)
class UpkeepConfig:
    lease_s: float
    max_attempts: int
    retention_s: float
    cleanup_batch: int
    sample_backlog: bool

    @property
    def sweep_interval_s(self) -> float:
        # Often enough that a dead pod's tasks return soon after its leases end.
        return min(5.0, max(0.5, self.lease_s / 4))


class Upkeep:
    def __init__(self, store: UpkeepStore, metrics: Metrics, config: UpkeepConfig) -> None:
        self._store = store
        self._metrics = metrics
        self._config = config
        # A purge runs on a storage thread; this ends it between two batches.
        self._stopping = threading.Event()

    async def run(self, stop: asyncio.Event) -> None:
        config = self._config
        chores = [self._every(stop, "lease sweep", config.sweep_interval_s, 0.0, self._sweep)]
        if config.retention_s > 0:
            # Not every pod at start-up: a quarter of the period in.
            first_s = RETENTION_EVERY_S / 4
            chores.append(self._every(stop, "retention", RETENTION_EVERY_S, first_s, self.purge))
        if config.sample_backlog:
            chores.append(self._every(stop, "backlog sample", BACKLOG_EVERY_S, 0.0, self._sample))
        relay = asyncio.create_task(self._relay_stop(stop))
        try:
            await asyncio.gather(*chores)
        finally:
            self._stopping.set()
            relay.cancel()

    async def _every(
        self,
        stop: asyncio.Event,
        what: str,
        period_s: float,
        first_s: float,
        job: Callable[[], Awaitable[object]],
    ) -> None:
        if await _stopped_within(stop, first_s):
            return
        while not stop.is_set():
            try:
                await job()
            except StorageError as exc:
                log.warning("%s skipped: %s", what, exc.reason)
            if await _stopped_within(stop, period_s):
                return

    async def _relay_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()

    async def _sweep(self) -> None:
        returned = await self._store.sweep(default_max_attempts=self._config.max_attempts)
        if returned:
            log.warning(
                "returned %d tasks whose leases expired (their pod stopped)",
                returned,
                extra={"event": "lease_expired"},
            )

    async def purge(self) -> int | None:
        retention_s = self._config.retention_s
        deleted = await self._store.purge(
            older_than_s=retention_s, batch_size=self._config.cleanup_batch, pause=self._pause
        )
        if deleted:
            log.info(
                "retention deleted %d finished tasks older than %gs",
                deleted,
                retention_s,
                extra={"event": "retention", "deleted": deleted},
            )
        return deleted

    def _pause(self) -> bool:
        return not self._stopping.wait(CLEANUP_PAUSE_S)

    async def _sample(self) -> None:
        self._metrics.backlog.set(await self._store.count_backlog())


async def _stopped_within(stop: asyncio.Event, timeout_s: float) -> bool:
    """Wait up to ``timeout_s``; True as soon as ``stop`` is set."""
    if timeout_s <= 0:
        return stop.is_set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout_s)
    return stop.is_set()
