"""The per-destination limit: how many of a pod's slots one destination may hold.

A destination that accepts connections and never answers would otherwise
fill every slot for ``WEBHOOK_TIMEOUT`` and make every other destination's
timers wait. Each destination may have at most ``limit`` tasks that are
due (being sent, or about to be); tasks claimed ahead take that room when
they come due. Claimed tasks past the limit are handed back
at once, without spending an attempt, and later claims skip the
destination's rows (by their URL prefix) until one of its tasks finishes.
Its rows stay ``waiting`` with their due times, so they are claimed oldest
first as soon as it has room: in due order, none lost, none starved.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from timer_controller.domain.destination import Destination, destination_of, url_prefix
from timer_controller.domain.task import ClaimedTask
from timer_controller.errors import StorageError
from timer_controller.runtime.ports import ClaimStore
from timer_controller.runtime.waits import short_ids

log = logging.getLogger(__name__)

# Distinct spellings of one destination's URL prefix kept for claims to skip;
# rows spelled otherwise are claimed and handed back, a bounded cost.
MAX_PREFIXES_PER_DESTINATION = 8


@dataclass
class _Held:
    count: int = 0
    prefixes: set[str] = field(default_factory=set)


class DestinationSlots:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[Destination, _Held] = {}
        # By (id, attempt): one task may be held twice, if its lease ran out
        # mid-flight and this pod claimed it again (see controller._Slot).
        self._of_task: dict[tuple[int, int], Destination] = {}

    def admit(self, tasks: Iterable[ClaimedTask]) -> tuple[list[ClaimedTask], list[ClaimedTask]]:
        """Split a claim, in its (due) order, into tasks to hold and tasks to hand back.

        Tasks due now take their destination's room at once; tasks claimed
        ahead are held without it (a far-future claim must not keep a due
        timer of the same destination waiting) and ``take`` it when due.
        """
        kept: list[ClaimedTask] = []
        deferred: list[ClaimedTask] = []
        for task in tasks:
            (kept if task.delay_s > 0 or self.take(task) else deferred).append(task)
        return kept, deferred

    def take(self, task: ClaimedTask) -> bool:
        """Count a task about to be sent against its destination; False when it is full."""
        where = destination_of(task.url)
        held = self._held.setdefault(where, _Held())
        if len(held.prefixes) < MAX_PREFIXES_PER_DESTINATION:
            held.prefixes.add(url_prefix(task.url))
        if held.count >= self.limit:
            return False
        held.count += 1
        self._of_task[task.id, task.attempt] = where
        return True

    def is_full(self, task: ClaimedTask) -> bool:
        """True while a held task's destination is at its limit."""
        where = self._of_task.get((task.id, task.attempt))
        return where is not None and self._held[where].count >= self.limit

    def finished(self, task: ClaimedTask) -> None:
        """A held task is done with (recorded, handed back or cancelled)."""
        where = self._of_task.pop((task.id, task.attempt), None)
        if where is None:
            return
        held = self._held[where]
        held.count -= 1
        if held.count <= 0:
            del self._held[where]

    def skip_prefixes(self) -> list[str]:
        """URL prefixes of destinations at their limit: the next claim leaves them."""
        return sorted(
            prefix
            for held in self._held.values()
            if held.count >= self.limit
            for prefix in held.prefixes
        )

    def busiest(self) -> int:
        """Tasks held by the destination holding most (0 when none)."""
        return max((held.count for held in self._held.values()), default=0)

    def at_limit(self) -> int:
        return sum(held.count >= self.limit for held in self._held.values())


async def hand_back_over_limit(
    claims: ClaimStore, *, owner: str, limit: int, tasks: list[ClaimedTask]
) -> None:
    """Hand back claims past their destination's limit, their attempt unspent.

    They stay waiting with their due times, and claims skip their
    destination until it has room: then the oldest are claimed first.
    """
    ids = {t.id for t in tasks}
    try:
        await claims.release(owner=owner, task_ids=ids)
    except StorageError as exc:
        log.warning(
            "could not hand back %d claims past their destination's limit (%s); "
            "their leases will expire",
            len(ids),
            exc.reason,
        )
        return
    log.info(
        "destination at its limit of %d: handed back %d claims for later: %s",
        limit,
        len(ids),
        short_ids(ids),
        extra={"event": "deferred", "task_ids": sorted(ids)},
    )
