"""A blocking check answered within a deadline: /readyz against a silent database.

The check runs on a thread of its own, never on the request's: a database
that stops answering makes the probe say "not ready" at its deadline rather
than hold the kubelet's connection until the driver gives up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

log = logging.getLogger(__name__)

# Kubernetes' default probe timeout is 1 s; a healthy check (a ping and the
# schema version) takes a few ms, so this leaves room on a busy node.
READY_DEADLINE_S = 0.8


class DeadlineCheck:
    """Calls ``check`` on one worker thread; False when it fails or is late.

    One check at a time: a probe that arrives while the last check is still
    blocked waits on that same check, so a silent database never piles up
    threads or pooled connections.
    """

    def __init__(self, check: Callable[[], bool], *, deadline_s: float = READY_DEADLINE_S) -> None:
        self._check = check
        self.deadline_s = deadline_s
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="readiness")
        self._lock = threading.Lock()
        self._running: Future[bool] | None = None

    def __call__(self) -> bool:
        with self._lock:
            if self._running is None or self._running.done():
                self._running = self._executor.submit(self._check)
            running = self._running
        try:
            return running.result(timeout=self.deadline_s)
        except TimeoutError:
            log.warning("readiness check had no answer within %gs: not ready", self.deadline_s)
            return False
        except Exception as exc:  # a readiness probe answers, it does not crash
            log.warning("readiness check failed: %s", str(exc)[:200])
            return False

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
