"""Keeping this pod's claims alive while they wait for their due time.

A claim's lease runs from the claim, not from the due time, and the pod
renews the leases of the claims it still holds. So a lease that ends before
the task's due time proves its pod was gone before it could send, and the
sweep returns it with its attempt unspent (``db/statements.sweep_update``);
a live pod never loses a claim to the sweep while it waits. A request is
only started while its lease covers all of it (``WEBHOOK_TIMEOUT``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from timer_controller.domain.task import ClaimedTask
from timer_controller.errors import StorageError
from timer_controller.runtime.ports import ClaimStore

log = logging.getLogger(__name__)

# The database's microseconds against the monotonic clock's nanoseconds.
_MARGIN_S = 0.1


class LeaseKeeper:
    def __init__(
        self, claims: ClaimStore, *, owner: str, lease_s: float, webhook_timeout_s: float
    ) -> None:
        self._claims = claims
        self._owner = owner
        self._lease_s = lease_s
        self._timeout_s = webhook_timeout_s
        # Renewed twice within the lease's spare time (past one request), so
        # one failed renewal still leaves a request room to start.
        self.interval_s = max(0.5, (lease_s - webhook_timeout_s) / 2)
        self._until: dict[tuple[int, int], float] = {}  # monotonic end of each lease
        self._next = 0.0
        self._renewing: asyncio.Task[None] | None = None

    def claimed(self, task: ClaimedTask, *, selected_at: float) -> None:
        # The claim's UPDATE ran after its SELECT returned: its lease ends no
        # earlier than selected_at + LEASE_TIME, whatever the clocks' offset.
        self._until[task.id, task.attempt] = selected_at + self._lease_s - _MARGIN_S
        self._next = self._next or selected_at + self.interval_s

    def forget(self, task: ClaimedTask) -> None:
        self._until.pop((task.id, task.attempt), None)

    def lease_end(self, task: ClaimedTask) -> float:
        """When this claim's lease ends, as far as this pod knows (monotonic; 0 if unknown)."""
        return self._until.get((task.id, task.attempt), 0.0)

    def may_send(self, task: ClaimedTask) -> bool:
        """True while the lease outlasts a whole request started now."""
        return time.monotonic() + self._timeout_s <= self._until.get((task.id, task.attempt), 0.0)

    def renewal_due(self) -> bool:
        """Whether ``renew_when_due`` would start now (so its list need not be built before)."""
        return time.monotonic() >= self._next and (self._renewing is None or self._renewing.done())

    def renew_when_due(self, waiting: list[ClaimedTask]) -> None:
        """Start renewing ``waiting`` claims' leases, if it is time and none is running."""
        if not waiting or time.monotonic() < self._next:
            return
        if self._renewing is not None and not self._renewing.done():
            return
        self._renewing = asyncio.create_task(self._renew(waiting))

    def stop(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()

    async def _renew(self, waiting: list[ClaimedTask]) -> None:
        started = time.monotonic()
        try:
            await self._claims.renew(
                owner=self._owner, task_ids={t.id for t in waiting}, lease_s=self._lease_s
            )
        except StorageError as exc:
            log.warning("renewing %d leases failed: %s", len(waiting), exc.reason)
            # Sooner than usual, but not back to back: each try may cost a
            # DB_TIMEOUT on the claims thread, which the claims need too.
            self._next = started + self.interval_s / 2
            return
        for task in waiting:
            if (task.id, task.attempt) in self._until:
                self._until[task.id, task.attempt] = started + self._lease_s - _MARGIN_S
        self._next = started + self.interval_s
