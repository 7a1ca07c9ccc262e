"""What the runtime needs from the rest of the system, as typed protocols.

bootstrap passes in the real ones (``db.facade.AsyncStorage``,
``delivery.dispatch.Dispatcher``); the unit tests pass fakes. Storage
methods raise ``errors.StorageError`` when the database fails.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from datetime import datetime
from typing import Protocol

from timer_controller.domain.task import ClaimBatch, ClaimedTask, Outcome, Transition

#: The database's clock as this pod estimates it (naive UTC).
DbClock = Callable[[], datetime]


class ClaimStore(Protocol):
    async def claim(
        self,
        *,
        owner: str,
        limit: int,
        lease_s: float,
        lookahead_s: float,
        skip_prefixes: Collection[str] = (),
        ahead_limit: int | None = None,
    ) -> ClaimBatch:
        """Due tasks, oldest first; none whose URL starts with one of ``skip_prefixes``.

        Of the tasks not yet due (within ``lookahead_s``), at most ``ahead_limit``.
        """
        ...

    async def renew(self, *, owner: str, task_ids: Collection[int], lease_s: float) -> int: ...

    async def release(self, *, owner: str, task_ids: Collection[int]) -> int: ...


class OutcomeStore(Protocol):
    async def record(self, *, owner: str | None, transitions: Sequence[Transition]) -> int: ...


class UpkeepStore(Protocol):
    async def sweep(self, *, default_max_attempts: int) -> int: ...

    async def purge(
        self, *, older_than_s: float, batch_size: int, pause: Callable[[], bool]
    ) -> int | None: ...

    async def count_backlog(self) -> int: ...


class Sender(Protocol):
    async def fire(self, task: ClaimedTask) -> Outcome:
        """One attempt; never raises except on cancellation."""
        ...
