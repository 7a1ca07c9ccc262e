"""The controller loop: claim, fire on time, record; stop gracefully.

Read it top to bottom in ``run``: claim while there are free slots and work
is due; each claimed task waits for its due time on an asyncio timer, fires,
and its outcome joins the next batched write. On stop: hand back what never
started, let in-flight requests finish within the grace period, flush.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import DBAPIError

from timer_controller.db.clock import DbClock
from timer_controller.db.repository import ClaimResult, OutcomeRecord, TaskRepository
from timer_controller.delivery.dispatch import Dispatcher
from timer_controller.domain.retry import Final, decide
from timer_controller.domain.task import ClaimedTask, Outcome, Status
from timer_controller.ops.metrics import Metrics
from timer_controller.runtime.writer import DatabaseLost, OutcomeWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoopConfig:
    owner: str
    batch_size: int
    max_in_flight: int
    poll_interval_s: float
    lookahead_s: float
    lease_s: float
    shutdown_grace_s: float
    max_attempts: int
    backoff_base_s: float
    backoff_max_s: float
    retry_number: int
    reconnect_wait_s: float
    flush_interval_s: float = 0.02
    flush_batch: int = 500

    @property
    def claim_horizon_s(self) -> float:
        """How far ahead a claim reaches: LOOKAHEAD, plus an overlap.

        The next claim starts POLL_INTERVAL after this one *ends*, so with a
        window of exactly LOOKAHEAD = POLL_INTERVAL a task due just past the
        window would be claimed when already due, late by the claim's own
        duration. The overlap (a fifth of the poll interval, at most 0.1 s)
        closes that gap; look-ahead off (0) stays off.
        """
        if self.lookahead_s <= 0:
            return 0.0
        return self.lookahead_s + min(0.1, self.poll_interval_s / 5)

    @property
    def sweep_interval_s(self) -> float:
        # Often enough that a dead pod's tasks return soon after its leases end.
        return min(5.0, max(0.5, self.lease_s / 4))


def claim_size(*, free_slots: int, batch_size: int, max_in_flight: int) -> int:
    """How many tasks to claim now; 0 means wait for slots.

    Never more than the free slots, so one pod never hoards work another
    could fire. Waiting until half a batch is free keeps claims from
    shrinking to one row at a time under full load.
    """
    batch = min(batch_size, max_in_flight)
    return min(batch, free_slots) if free_slots >= max(1, batch // 2) else 0


def to_record(
    task: ClaimedTask, outcome: Outcome, config: LoopConfig, *, now: datetime
) -> OutcomeRecord:
    decision = decide(
        attempt=task.attempt,
        max_attempts=task.max_attempts or config.max_attempts,
        outcome=outcome.klass,
        retry_after_s=outcome.retry_after_s,
        now=now,
        base_s=config.backoff_base_s,
        max_s=config.backoff_max_s,
    )
    if isinstance(decision, Final):
        status, next_due = decision.status, None
    else:
        status, next_due = Status.WAITING, decision.next_due_at
    return OutcomeRecord(
        task_id=task.id,
        status=status,
        fired_at=outcome.fired_at,
        status_code=outcome.status_code,
        error=outcome.error,
        next_due_at=next_due,
    )


class Controller:
    def __init__(
        self,
        repo: TaskRepository,
        dispatcher: Dispatcher,
        config: LoopConfig,
        *,
        metrics: Metrics,
        clock: DbClock,
    ) -> None:
        self._repo = repo
        self._dispatcher = dispatcher
        self._config = config
        self._metrics = metrics
        self._clock = clock
        self._held: dict[int, asyncio.Task[None]] = {}  # claimed, not yet finished
        self._unsent: set[int] = set()  # claimed, request not yet started
        self._slot_freed = asyncio.Event()
        self._claimer = ThreadPoolExecutor(1, thread_name_prefix="claimer")
        self._writer = OutcomeWriter(
            repo,
            owner=config.owner,
            flush_interval_s=config.flush_interval_s,
            flush_batch=config.flush_batch,
            retry_number=config.retry_number,
            reconnect_wait_s=config.reconnect_wait_s,
            metrics=metrics,
        )
        self._next_sweep = 0.0
        #: Monotonic time of the loop's last turn, for /healthz.
        self.last_tick = time.monotonic()

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set; 0 after a graceful stop, 1 if the database was lost."""
        writer = asyncio.create_task(self._writer.run(), name="outcome-writer")
        stop_or_writer_failed = asyncio.create_task(self._stop_or_failure(stop, writer))
        try:
            await self._claim_loop(stop)
            code = 0
        except DatabaseLost as exc:
            log.error("database lost: %s; exiting so the pod restarts", exc)
            code = 1
        code = max(code, await self._shutdown(writer))
        stop_or_writer_failed.cancel()
        self._claimer.shutdown(wait=False)
        return code

    async def _stop_or_failure(self, stop: asyncio.Event, writer: asyncio.Task[None]) -> None:
        # A writer that gives up ends the claim loop too: there is no point firing
        # tasks whose outcomes cannot be recorded.
        await asyncio.wait([writer], return_when=asyncio.FIRST_COMPLETED)
        if writer.exception() is not None:
            stop.set()

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            self.last_tick = time.monotonic()
            limit = claim_size(
                free_slots=self._config.max_in_flight - len(self._held),
                batch_size=self._config.batch_size,
                max_in_flight=self._config.max_in_flight,
            )
            if limit == 0:
                self._slot_freed.clear()
                await _wait_any(stop, self._slot_freed, timeout_s=self._config.poll_interval_s)
                continue
            try:
                result = await asyncio.get_running_loop().run_in_executor(
                    self._claimer, self._claim, limit
                )
                failures = 0
            except DBAPIError as exc:
                failures += 1
                self._metrics.db_reconnects.inc()
                log.warning(
                    "claim failed (try %d of %d): %s",
                    failures,
                    self._config.retry_number,
                    str(exc.orig)[:200],
                )
                if failures >= self._config.retry_number:
                    raise DatabaseLost(f"claims failed {failures} times in a row") from exc
                await _wait_any(stop, timeout_s=self._config.reconnect_wait_s)
                continue
            self._start(result)
            if len(result.tasks) < limit:
                # Nothing more is due within the look-ahead window.
                await _wait_any(stop, timeout_s=self._config.poll_interval_s)
            else:
                await asyncio.sleep(0)  # let due timers and outcomes run between claims

    def _claim(self, limit: int) -> ClaimResult:
        """On the claimer thread: the lease sweep when due, then one claim."""
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self._config.sweep_interval_s
            returned = self._repo.sweep_expired_leases(
                default_max_attempts=self._config.max_attempts
            )
            if returned:
                log.warning(
                    "returned %d tasks whose leases expired (their pod stopped)",
                    returned,
                    extra={"event": "lease_expired"},
                )
        result = self._repo.claim_due(
            owner=self._config.owner,
            limit=limit,
            lease_s=self._config.lease_s,
            lookahead_s=self._config.claim_horizon_s,
        )
        if result.db_now is not None and result.local_before is not None:
            self._clock.observe(
                result.db_now,
                local_before=result.local_before,
                uncertainty_s=result.select_s,
            )
        return result

    def _start(self, result: ClaimResult) -> None:
        if not result.tasks:
            return
        self._metrics.claimed.inc(len(result.tasks))
        ids = [t.id for t in result.tasks]
        log.info(
            "claimed %d tasks: %s", len(ids), _ids(ids), extra={"event": "claimed", "task_ids": ids}
        )
        for task in result.tasks:
            # delay_s was measured against the database clock before the SELECT
            # returned, so firing delay_s after that is never early by that clock.
            fire_at = result.selected_at + task.delay_s
            self._unsent.add(task.id)
            self._held[task.id] = asyncio.create_task(self._deliver(task, fire_at))
        self._metrics.held.set(len(self._held))

    async def _deliver(self, task: ClaimedTask, fire_at: float) -> None:
        try:
            # asyncio timers run no earlier than their deadline (less the clock's
            # nanosecond resolution), finer than the database's microseconds.
            wait_s = fire_at - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            self._unsent.discard(task.id)
            self._metrics.in_flight.inc()
            try:
                outcome = await self._dispatcher.fire(task)
            finally:
                self._metrics.in_flight.dec()
            self._record(task, outcome)
        finally:
            self._held.pop(task.id, None)
            self._metrics.held.set(len(self._held))
            self._slot_freed.set()

    def _record(self, task: ClaimedTask, outcome: Outcome) -> None:
        record = to_record(task, outcome, self._config, now=self._clock.now())
        self._writer.add(record)
        m, klass = self._metrics, outcome.klass.value
        m.fired.labels(klass).inc()
        m.request_duration.observe(outcome.duration_s)
        lateness_s = None
        if outcome.fired_at is not None:
            lateness_s = max(0.0, (outcome.fired_at - task.due_at).total_seconds())
            m.lateness.observe(lateness_s)
        if record.status is Status.DONE:
            m.done.inc()
            event, level = "done", logging.INFO
        elif record.status is Status.FAILED:
            m.failed.labels(klass).inc()
            event, level = "failed", logging.WARNING
        else:
            m.retried.labels(klass).inc()
            event, level = "retry", logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                "task %d %s: %s (attempt %d)%s",
                task.id,
                event,
                outcome.error or f"HTTP {outcome.status_code}",
                task.attempt,
                f", next try at {record.next_due_at:%H:%M:%S.%f}Z" if record.next_due_at else "",
                extra={
                    "event": event,
                    "task_id": task.id,
                    "attempt": task.attempt,
                    "outcome": klass,
                    "status_code": outcome.status_code,
                    "error": outcome.error,
                    "lateness_s": lateness_s,
                    "duration_s": round(outcome.duration_s, 6),
                    "next_due_at": record.next_due_at,
                },
            )

    async def _shutdown(self, writer: asyncio.Task[None]) -> int:
        """Hand back unsent claims at once, let requests finish, flush, report."""
        unsent = [self._held[i] for i in self._unsent if i in self._held]
        for pending in unsent:
            pending.cancel()
        await self._release(set(self._unsent))
        in_flight = [t for t in self._held.values() if not t.done()]
        if in_flight and not writer.done():
            log.info(
                "waiting up to %gs for %d in-flight requests",
                self._config.shutdown_grace_s,
                len(in_flight),
            )
            await asyncio.wait(in_flight, timeout=self._config.shutdown_grace_s)
        # Still sending after the grace: hand back too; the receiver may see it twice.
        late = set(self._held)
        for task in list(self._held.values()):
            task.cancel()
        await asyncio.gather(*self._held.values(), return_exceptions=True)
        await self._release(late)
        self._writer.close()
        try:
            await writer
        except DatabaseLost as exc:
            log.error("database lost: %s", exc)
            return 1
        except Exception:
            # Unwritten outcomes come back when their leases expire; exit 1
            # so the orchestrator restarts the pod rather than hiding it.
            log.exception("the outcome writer failed")
            return 1
        return 0

    async def _release(self, ids: set[int]) -> None:
        if not ids:
            return
        owner = self._config.owner
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._claimer, lambda: self._repo.release(owner=owner, task_ids=ids)
            )
        except DBAPIError as exc:
            log.warning(
                "could not hand back %d claims (%s); their leases will expire", len(ids), exc.orig
            )
            return
        self._metrics.released.inc(len(ids))
        log.info(
            "handed back %d unfired claims: %s",
            len(ids),
            _ids(ids),
            extra={"event": "released", "task_ids": sorted(ids)},
        )


async def _wait_any(*events: asyncio.Event, timeout_s: float) -> None:
    """Until one of ``events`` is set, or ``timeout_s`` passes."""
    waiters = [asyncio.create_task(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def _ids(ids: Iterable[int]) -> str:
    listed = sorted(ids)
    if len(listed) <= 20:
        return ",".join(map(str, listed))
    return f"{','.join(map(str, listed[:10]))},…,{listed[-1]} ({len(listed)} ids)"
