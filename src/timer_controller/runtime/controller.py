"""The controller loop: claim, fire on time, record; stop gracefully.

Read it top to bottom in ``run``: while there are free slots and work is
due, claim; each claimed task waits for its due time on an asyncio timer,
fires, and its transition joins the next batched write. On stop: hand back
what was never sent, let requests in flight finish within the grace
period, record the rest as unanswered, flush. The loop builds nothing: its
storage, sender, writer and clock are handed in (bootstrap, or a test's fakes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from timer_controller.domain.retry import RetryPolicy, decide
from timer_controller.domain.task import ClaimBatch, ClaimedTask, Outcome, OutcomeClass
from timer_controller.errors import BadData, DatabaseUnavailable, StorageError
from timer_controller.ops.metrics import Metrics
from timer_controller.runtime.destinations import DestinationSlots, hand_back_over_limit
from timer_controller.runtime.leases import LeaseKeeper
from timer_controller.runtime.outcomes import report
from timer_controller.runtime.ports import ClaimStore, DbClock, Sender
from timer_controller.runtime.waits import not_before, set_when_done, short_ids, wait_any
from timer_controller.runtime.writer import OnCommit, OutcomeWriter

log = logging.getLogger(__name__)

NO_ANSWER_BEFORE_SHUTDOWN = "no answer before shutdown"
# Row bodies held at once, in characters. A held body costs two or three
# times its size (the text, its encoding, the socket's buffer): 100 slots of
# 1 MiB bodies took a pod to 290 MB. Past this, no claim is made until some
# are sent, which keeps a pod at the shipped defaults under 200 MB (the
# rss-hostile benchmark); a pod of small bodies never gets near it.
MAX_HELD_BODY_CHARS = 24 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class LoopConfig:
    owner: str
    batch_size: int
    max_in_flight: int
    poll_interval_s: float
    lookahead_s: float
    lease_s: float
    shutdown_grace_s: float
    retry_number: int
    reconnect_wait_s: float
    #: MAX_IN_FLIGHT_PER_HOST; None: no limit below max_in_flight.
    host_limit: int | None = None
    #: DB_TIMEOUT: after the grace, how long the hand-back may take.
    db_timeout_s: float = 10.0
    #: WEBHOOK_TIMEOUT: a request starts only while its lease covers it.
    webhook_timeout_s: float = 10.0

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


def claim_size(
    *, free_slots: int, batch_size: int, max_in_flight: int, whole_batches: bool = False
) -> int:
    """How many tasks to claim now; 0 means wait for slots.

    Never more than the free slots, so one pod never hoards work another
    could fire. Waiting until half a batch is free keeps claims from
    shrinking to one row at a time under full load. ``whole_batches`` waits
    for a whole batch: for slots that free a hand-off message at a time.
    """
    batch = min(batch_size, max_in_flight)
    return min(batch, free_slots) if free_slots >= claim_room(batch, whole_batches) else 0


def claim_room(batch: int, whole_batches: bool) -> int:
    """The free slots a claim waits for (``claim_size``)."""
    return batch if whole_batches else max(1, batch // 2)


def lookahead_room(*, held_ahead: int, max_in_flight: int, batch_size: int) -> int:
    """How many more tasks not yet due a claim may take now.

    Some slots never hold a task claimed ahead of its time, so a task already
    due never waits behind tasks that are not: a tenth of them, and at least
    the half batch ``claim_size`` waits for before it claims. Not more: at a
    steady rate the look-ahead window itself holds rate × LOOKAHEAD tasks,
    and capping those at half the slots (as first built) made 143 timers/s at
    the defaults 165 ms late at p99 instead of 7 (docs/benchmarks.md).
    """
    batch = min(batch_size, max_in_flight)
    reserved = max(1, batch // 2, max_in_flight // 10)
    return max(0, max_in_flight - reserved - held_ahead)


@dataclass(eq=False, slots=True)
class _Slot:
    """One claimed attempt held by this process, from claim to recorded outcome.

    Slots are objects, not task ids: if a lease ran out mid-flight and this
    process claimed the same task again, both attempts hold a slot of their own.
    """

    task: ClaimedTask
    handle: asyncio.Task[None] | None = None
    #: When the request started (database clock); None while it waits to fire.
    sent_at: datetime | None = field(default=None)


class Controller:
    #: Whether a claim waits for a whole batch of free slots (``claim_size``).
    WHOLE_BATCHES = False

    def __init__(
        self,
        claims: ClaimStore,
        sender: Sender | None,
        writer: OutcomeWriter,
        config: LoopConfig,
        *,
        retry: RetryPolicy,
        metrics: Metrics,
        db_now: DbClock,
    ) -> None:
        self._claims = claims
        self._sender = sender
        self._writer = writer
        self._config = config
        self._retry = retry
        self._metrics = metrics
        self._db_now = db_now
        self._slots: set[_Slot] = set()
        #: Characters of the row bodies the slots hold, kept as slots come and go.
        self._body_chars = 0
        #: Free slots a claim waits for (``claim_size``): fewer wake the loop for nothing.
        self._claim_room = claim_room(
            min(config.batch_size, config.max_in_flight), self.WHOLE_BATCHES
        )
        self._destinations = DestinationSlots(config.host_limit or config.max_in_flight)
        self._leases = LeaseKeeper(
            claims,
            owner=config.owner,
            lease_s=config.lease_s,
            webhook_timeout_s=config.webhook_timeout_s,
        )
        #: A claim the loop stopped waiting for at shutdown; it ends on its own thread.
        self._abandoned: asyncio.Future[int] | None = None
        #: Set at shutdown: claims that still arrive are handed back, not started.
        self._stopping = False
        self._late: set[int] = set()
        #: True once shutdown gave up on a database that did not answer in time.
        self.gave_up = False
        self._lost_reported = False
        self._slot_freed = asyncio.Event()
        # Set when a destination at its limit gets room: its rows, skipped by
        # the last claim, are due now and must not wait a poll interval.
        self._room_freed = asyncio.Event()
        # Set once a claim's worth of tasks claimed ahead has started, while the
        # last claim was cut short by the look-ahead room: the tasks it left
        # are due within the window and must not wait a poll interval.
        self._ahead_room = asyncio.Event()
        #: Whether the last claim took all the look-ahead room it had.
        self._ahead_full = False
        #: Tasks claimed ahead that started since that claim.
        self._ahead_started = 0
        #: Monotonic time of the loop's last turn, for /healthz.
        self.last_tick = time.monotonic()

    @property
    def held(self) -> int:
        """Claimed attempts not yet recorded."""
        return len(self._slots)

    async def run(self, stop: asyncio.Event) -> int:
        """Run until ``stop`` is set; 0 after a graceful stop, 1 after a failure."""
        writer = asyncio.create_task(self._writer.run(), name="outcome-writer")
        watcher = asyncio.create_task(set_when_done(stop, writer))
        code = 0
        try:
            await self._claim_loop(stop)
        except DatabaseUnavailable as exc:
            self._report_lost(str(exc))
            code = 1
        except Exception:
            # Whatever it was, the claims this pod holds are handed back below.
            log.exception("the claim loop failed; shutting down")
            code = 1
        code = max(code, await self._shutdown(writer))
        watcher.cancel()
        return code

    async def _claim_loop(self, stop: asyncio.Event) -> None:
        config, failures = self._config, 0
        while not stop.is_set():
            self.last_tick = time.monotonic()
            if self._leases.renewal_due():
                self._leases.renew_when_due([s.task for s in self._slots if s.sent_at is None])
            limit = claim_size(
                free_slots=config.max_in_flight - len(self._slots),
                batch_size=config.batch_size,
                max_in_flight=config.max_in_flight,
                whole_batches=self.WHOLE_BATCHES,
            )
            if self._body_chars >= MAX_HELD_BODY_CHARS:
                limit = 0  # memory, not slots, is what runs out: wait for bodies to go
            if limit == 0:
                self._slot_freed.clear()
                await wait_any(stop, self._slot_freed, timeout_s=config.poll_interval_s)
                continue
            if not self._may_claim():
                await wait_any(stop, timeout_s=config.poll_interval_s)
                continue
            self._room_freed.clear()
            claim = asyncio.ensure_future(self._claim(limit))
            if not await self._done_before_stop(claim, stop):
                self._abandoned = claim
                self._stopping = True
                return
            try:
                claimed = claim.result()
            except BadData as exc:
                # A row's value, not the connection: waiting a while is all there is to do.
                log.error("claim refused by the database: %s", exc.reason)
                await wait_any(stop, timeout_s=config.poll_interval_s)
                continue
            except StorageError as exc:
                failures += 1
                self._metrics.db_reconnects.inc()
                log.warning(
                    "claim failed (try %d of %d): %s", failures, config.retry_number, exc.reason
                )
                if failures >= config.retry_number:
                    raise DatabaseUnavailable(f"claims failed {failures} times in a row") from exc
                await wait_any(stop, timeout_s=config.reconnect_wait_s)
                continue
            failures = 0
            if claimed < limit:
                # Nothing more is due within the look-ahead window, or there
                # was no room for it: then the next claim goes as room frees.
                await wait_any(
                    stop, self._room_freed, self._ahead_room, timeout_s=config.poll_interval_s
                )
            else:
                await asyncio.sleep(0)  # let due timers and outcomes run between claims

    async def _done_before_stop(self, work: asyncio.Future[int], stop: asyncio.Event) -> bool:
        """Wait for ``work``; False if a stop came first.

        The loop is alive while a database call is slow (each ends within
        DB_TIMEOUT), so it keeps ticking for /healthz meanwhile.
        """
        while not work.done() and not stop.is_set():
            self.last_tick = time.monotonic()
            await wait_any(stop, timeout_s=self._config.poll_interval_s, also=work)
        return work.done()

    async def _claim(self, limit: int) -> int:
        """Claim up to ``limit`` tasks and start them; how many were claimed.

        Tasks due now come first; tasks due within the look-ahead only while
        ``lookahead_room`` allows, so they never take the slots due ones need.
        One claim does both: claiming the due tasks first and then those
        ahead, as first built, cost every poll of an idle pod two claim
        statements and two commits.
        """
        config = self._config
        horizon_s = config.claim_horizon_s
        self._ahead_full = False
        self._ahead_started = 0
        self._ahead_room.clear()
        if horizon_s <= 0:
            claimed, _ = await self._claim_within(limit, 0.0)
            return claimed
        room = lookahead_room(
            held_ahead=sum(1 for s in self._slots if s.sent_at is None),
            max_in_flight=config.max_in_flight,
            batch_size=config.batch_size,
        )
        claimed, ahead = await self._claim_within(limit, horizon_s, ahead_limit=room)
        # At a steady rate above room / LOOKAHEAD the window holds more tasks
        # than the room: waiting a poll interval after such a claim left the
        # rest of the window unclaimed until past due (p99 49 ms at 197/s at
        # the defaults, docs/benchmarks.md).
        self._ahead_full = ahead == room < limit - (claimed - ahead)
        return claimed

    async def _claim_within(
        self, limit: int, lookahead_s: float, *, ahead_limit: int | None = None
    ) -> tuple[int, int]:
        """One claim; its tasks start, or wait for room (``_defer``), or go back at a stop.

        How many tasks it claimed, and how many of them were not yet due.
        """
        batch = await self._claims.claim(
            owner=self._config.owner,
            limit=limit,
            lease_s=self._config.lease_s,
            lookahead_s=lookahead_s,
            skip_prefixes=self._destinations.skip_prefixes(),
            ahead_limit=ahead_limit,
        )
        ahead = sum(1 for t in batch.tasks if t.delay_s > 0)
        if self._stopping:  # the loop stopped waiting for this claim: hand it all back
            self._late.update(t.id for t in batch.tasks)
            return len(batch.tasks), ahead
        kept, deferred = self._destinations.admit(batch.tasks)
        self._start(batch, kept)
        await self._defer(deferred)
        return len(batch.tasks), ahead

    def _start(self, batch: ClaimBatch, tasks: list[ClaimedTask]) -> None:
        if not tasks:
            return
        self._metrics.claimed.inc(len(tasks))
        self._count_destinations()
        ids = [t.id for t in tasks]
        log.info(
            "claimed %d tasks: %s",
            len(ids),
            short_ids(ids),
            extra={"event": "claimed", "task_ids": ids},
        )
        for task in tasks:
            self._leases.claimed(task, selected_at=batch.selected_at)
            slot = _Slot(task)
            slot.handle = asyncio.create_task(self._deliver(slot, batch.selected_at + task.delay_s))
            self._slots.add(slot)
            if task.body is not None:
                self._body_chars += len(task.body)
        self._metrics.held.set(len(self._slots))

    async def _deliver(self, slot: _Slot, fire_at: float) -> None:
        try:
            # Never before its time, on uvloop's millisecond timers too.
            await not_before(fire_at)
            if slot.task.delay_s > 0 and not self._destinations.take(slot.task):
                # Claimed ahead, due now, its destination full: back to waiting.
                await self._defer([slot.task])
                return
            if not self._leases.may_send(slot.task):
                log.warning(
                    "task %d not sent: its lease could not be renewed in time; "
                    "it returns when the lease expires",
                    slot.task.id,
                    extra={"event": "lease_unrenewed", "task_id": slot.task.id},
                )
                return
            slot.sent_at = self._db_now()
            if slot.task.delay_s > 0 and self._ahead_full:
                self._ahead_started += 1
                if self._ahead_started >= self._claim_room:
                    self._ahead_room.set()
            await self._fire(slot, fire_at)
        finally:
            self._free(slot)

    def _free(self, slot: _Slot) -> None:
        self._slots.discard(slot)
        if slot.task.body is not None:
            self._body_chars -= len(slot.task.body)
        if self._destinations.is_full(slot.task):
            self._room_freed.set()
        self._destinations.finished(slot.task)
        self._leases.forget(slot.task)
        self._count_destinations()
        self._metrics.held.set(len(self._slots))
        # The loop waits for a claim's worth of free slots, or for bodies to go:
        # waking it at every freed slot woke it about five times per claim for nothing.
        if self._config.max_in_flight - len(self._slots) >= self._claim_room or slot.task.body:
            self._slot_freed.set()

    def _may_claim(self) -> bool:
        """Whether to claim now (``HandOffController`` waits for its broker)."""
        return True

    async def _fire(self, slot: _Slot, fire_at: float) -> None:
        """Send one due attempt and record its outcome (DISPATCH=direct)."""
        assert self._sender is not None, "direct dispatch needs a sender"
        self._metrics.in_flight.inc()
        try:
            outcome = await self._sender.fire(slot.task)
        finally:
            self._metrics.in_flight.dec()
        self._record(slot.task, outcome)

    async def _defer(self, tasks: list[ClaimedTask]) -> None:
        if tasks:
            self._metrics.deferred.inc(len(tasks))
            await hand_back_over_limit(
                self._claims, owner=self._config.owner, limit=self._destinations.limit, tasks=tasks
            )

    def _count_destinations(self) -> None:
        self._metrics.destination_busiest.set(self._destinations.busiest())
        self._metrics.destinations_at_limit.set(self._destinations.at_limit())

    def _record(
        self, task: ClaimedTask, outcome: Outcome, *, on_commit: OnCommit | None = None
    ) -> None:
        transition = decide(task, outcome, policy=self._retry, now=self._db_now())
        self._writer.add(transition, on_commit=on_commit)
        report(self._metrics, task, outcome, transition)

    async def _shutdown(self, writer: asyncio.Task[None]) -> int:
        """Hand back unsent claims at once, let requests finish, record the rest, flush.

        All of it within SHUTDOWN_GRACE + DB_TIMEOUT: a database that cannot
        take the hand-back in that time is given up on, since the leases
        return whatever it did not take.
        """
        config = self._config
        deadline = time.monotonic() + config.shutdown_grace_s + config.db_timeout_s
        self._leases.stop()
        unsent = [s for s in self._slots if s.sent_at is None]
        await self._cancel(unsent)
        # Concurrent with the grace: a silent database must not eat into it.
        hand_back = asyncio.create_task(self._hand_back({s.task.id for s in unsent}))
        in_flight = [s.handle for s in self._slots if s.handle is not None]
        if in_flight and not writer.done():
            log.info(
                "waiting up to %gs for %d in-flight requests",
                self._config.shutdown_grace_s,
                len(in_flight),
            )
            await asyncio.wait(in_flight, timeout=self._config.shutdown_grace_s)
        late = list(self._slots)
        await self._cancel(late)
        await self._unanswered(late)
        self._writer.close()
        await asyncio.wait([hand_back, writer], timeout=max(0.0, deadline - time.monotonic()))
        if not (hand_back.done() and writer.done()):
            return self._give_up(hand_back, writer, config.shutdown_grace_s + config.db_timeout_s)
        try:
            await writer
        except DatabaseUnavailable as exc:
            self._report_lost(str(exc))
            return 1
        except Exception:
            # Unwritten outcomes come back when their leases expire; exit 1
            # so the orchestrator restarts the pod rather than hiding it.
            log.exception("the outcome writer failed")
            return 1
        return 0

    async def _unanswered(self, slots: list[_Slot]) -> None:
        """Sent but unanswered: that was an attempt, whatever the receiver did with it."""
        for slot in slots:
            outcome = Outcome(
                slot.task.id,
                OutcomeClass.TIMEOUT,
                error=NO_ANSWER_BEFORE_SHUTDOWN,
                fired_at=slot.sent_at,
            )
            self._record(slot.task, outcome)

    def _give_up(
        self, hand_back: asyncio.Task[None], writer: asyncio.Task[None], budget_s: float
    ) -> int:
        hand_back.cancel()
        writer.cancel()
        self.gave_up = True
        log.error(
            "the database did not take the hand-back within %gs (SHUTDOWN_GRACE + DB_TIMEOUT); "
            "giving up on it: the leases will return the claims it did not take, "
            "and they fire again",
            budget_s,
            extra={"event": "gave_up"},
        )
        return 1

    def _report_lost(self, reason: str) -> None:
        """One ERROR line for a lost database, whichever part noticed first."""
        if self._lost_reported:
            log.warning("also: %s", reason)
            return
        self._lost_reported = True
        log.error("database lost: %s; exiting so the pod restarts", reason)

    async def _hand_back(self, ids: set[int]) -> None:
        """Release unsent claims, with those of a claim abandoned at the stop."""
        if self._abandoned is not None:
            with contextlib.suppress(StorageError):  # a failed claim claimed nothing
                await self._abandoned  # what it claimed is in self._late
        await self._release(ids | self._late)

    @staticmethod
    async def _cancel(slots: list[_Slot]) -> None:
        handles = [s.handle for s in slots if s.handle is not None]
        for handle in handles:
            handle.cancel()
        await asyncio.gather(*handles, return_exceptions=True)

    async def _release(self, ids: set[int]) -> None:
        if not ids:
            return
        try:
            await self._claims.release(owner=self._config.owner, task_ids=ids)
        except StorageError as exc:
            log.warning(
                "could not hand back %d claims (%s); their leases will expire", len(ids), exc.reason
            )
            return
        self._metrics.released.inc(len(ids))
        log.info(
            "handed back %d unfired claims: %s",
            len(ids),
            short_ids(ids),
            extra={"event": "released", "task_ids": sorted(ids)},
        )
