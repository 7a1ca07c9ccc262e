"""Start-up that a stop can end: signal handlers first, then connect, create, migrate.

Start-up may wait ``RETRY_NUMBER × RECONNECT_WAIT_TIME`` for the server and
up to two minutes for the migration lock. It runs on a worker thread while
the main thread waits for it or for SIGTERM/SIGINT, so a stop in that window
logs one line and exits 0 instead of dying with 143 and saying nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

from sqlalchemy import Engine

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass
class StopRequest:
    """A stop signal seen by the start-up handlers (they only record it)."""

    event: threading.Event = field(default_factory=threading.Event)
    signum: int | None = None
    #: Set while a migration runs: a stop lets it finish rather than cut it half way.
    migrating: threading.Event = field(default_factory=threading.Event)

    def handle(self, signum: int, frame: FrameType | None) -> None:
        # No logging here: a handler that logs can deadlock on the logging
        # lock the interrupted main thread may hold.
        if self.signum is None:
            self.signum = signum
        self.event.set()

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "stop"


@dataclass(frozen=True)
class Started:
    engine: Engine
    #: Still recording: a signal between start-up and the loop's own handlers lands here.
    stop: StopRequest


#: Start-up itself: given the stop and "migrating" events, the migrated engine.
Prepare = Callable[[threading.Event, threading.Event], Engine]


def start_up(prepare: Prepare, *, settle_s: float) -> Started | None:
    """Install the stop handlers, then ``prepare``; None when a stop came first.

    ``settle_s`` (one DB_TIMEOUT) is how long a migration already running
    may take to finish after a stop.
    """
    stop = StopRequest()
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop.handle)
    outcome: list[Engine | BaseException] = []

    def work() -> None:
        try:
            outcome.append(prepare(stop.event, stop.migrating))
        except BaseException as exc:  # handed to the main thread, raised there
            outcome.append(exc)
        finally:
            stop.event.set()  # wakes the main thread; ``stop.signum`` says whether to stop

    worker = threading.Thread(target=work, name="start-up", daemon=True)
    worker.start()
    # Bounded by prepare's own deadlines (tries, DB_TIMEOUT, the lock wait),
    # and a signal ends it at once. Event.wait is interrupted by signals.
    stop.event.wait()
    if stop.signum is not None:
        _stopped(settle_s, stop, worker, outcome)
        return None
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    stop.event.clear()
    return Started(engine=result, stop=stop)


def _stopped(
    settle_s: float,
    stop: StopRequest,
    worker: threading.Thread,
    outcome: list[Engine | BaseException],
) -> None:
    # A connection try in progress is abandoned with its daemon thread: it has
    # changed nothing. A migration in progress is not: MySQL's DDL is not
    # transactional, so it is given one DB_TIMEOUT to finish.
    if stop.migrating.is_set():
        worker.join(settle_s)
    if outcome and isinstance(outcome[0], Engine):
        outcome[0].dispose()
    log.info(
        "%s received during start-up: exiting before the controller started",
        stop.name,
        extra={"event": "stopped"},
    )
