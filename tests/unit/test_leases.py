"""LeaseKeeper: a request starts only while its lease covers it; renewals extend it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime

from timer_controller.domain.task import ClaimBatch, ClaimedTask
from timer_controller.errors import StorageError
from timer_controller.runtime.leases import LeaseKeeper

TASK = ClaimedTask(
    id=7, url="http://x.test/", due_at=datetime(2026, 12, 1), attempt=1, max_attempts=None
)


@dataclass
class Renewals:
    calls: list[set[int]] = field(default_factory=list)
    error: StorageError | None = None

    async def claim(self, **_: object) -> ClaimBatch:
        raise AssertionError("not used")

    async def renew(self, *, owner: str, task_ids: Collection[int], lease_s: float) -> int:
        self.calls.append(set(task_ids))
        if self.error is not None:
            raise self.error
        return len(task_ids)

    async def release(self, *, owner: str, task_ids: Collection[int]) -> int:
        return 0


def test_a_request_starts_only_while_the_lease_covers_all_of_it() -> None:
    keeper = LeaseKeeper(Renewals(), owner="me", lease_s=3.0, webhook_timeout_s=1.0)
    keeper.claimed(TASK, selected_at=time.monotonic())
    assert keeper.may_send(TASK)

    keeper.claimed(TASK, selected_at=time.monotonic() - 2.5)  # 0.4 s of lease left
    assert not keeper.may_send(TASK)
    keeper.forget(TASK)
    assert not keeper.may_send(TASK)


def test_a_renewal_extends_the_lease_and_a_failed_one_does_not() -> None:
    async def scenario() -> None:
        store = Renewals()
        keeper = LeaseKeeper(store, owner="me", lease_s=3.0, webhook_timeout_s=1.0)
        keeper.claimed(TASK, selected_at=time.monotonic() - 2.5)
        assert not keeper.may_send(TASK)

        store.error = StorageError("no answer")
        keeper.renew_when_due([TASK])
        await asyncio.sleep(0.01)
        assert not keeper.may_send(TASK)

        store.error = None
        await asyncio.sleep(0.6)  # a failed renewal is tried again after half an interval
        keeper.renew_when_due([TASK])
        await asyncio.sleep(0.01)
        assert keeper.may_send(TASK)
        assert store.calls == [{7}, {7}]

    asyncio.run(asyncio.wait_for(scenario(), 10))
