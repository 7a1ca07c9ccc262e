"""The benchmark's CPU readings: a server's exited threads still count."""

from __future__ import annotations

import os
import threading
import time

from bench.procs import cpu_s, process_cpu_s


def _spin_in_a_thread(seconds: float) -> float:
    """Burn ``seconds`` of CPU in a thread that then exits; its CPU time."""
    spent: list[float] = []

    def spin() -> None:
        start = time.thread_time()
        while time.thread_time() - start < seconds:
            pass
        spent.append(time.thread_time() - start)

    thread = threading.Thread(target=spin)
    thread.start()
    thread.join()
    return spent[0]


def test_a_process_reading_keeps_the_cpu_of_threads_that_exited() -> None:
    pid = os.getpid()
    before_process, before_threads = process_cpu_s(pid), cpu_s(pid)
    spent = _spin_in_a_thread(0.3)
    # 10 ms ticks, rounded down at both readings.
    assert process_cpu_s(pid) - before_process >= spent - 0.03
    # The live-thread sum lost it: why the database is read per process.
    assert cpu_s(pid) - before_threads < spent / 2
