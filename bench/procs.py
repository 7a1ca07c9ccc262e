"""Child processes: the receiver and the pods of each mode, and their /proc numbers."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx

from bench.db import REPO_ROOT, child_env

RECEIVER_SCRIPT = REPO_ROOT / "bench" / "receiver.py"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 20.0
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: How each mode's pod is started; every mode reads the controller's env names.
MODE_COMMANDS: dict[str, list[str]] = {
    "seed": [sys.executable, "-m", "bench.seed_mode"],
    "raw": [sys.executable, "-m", "bench.raw_mode"],
    "controller": [sys.executable, "-m", "timer_controller", "run"],
    "defaults": [sys.executable, "-m", "timer_controller", "run"],
    "defaults-info": [sys.executable, "-m", "timer_controller", "run"],
    # DISPATCH=amqp (bench/amqp_scaling.py): a controller, and its HTTP workers.
    "amqp": [sys.executable, "-m", "timer_controller", "run"],
    "worker": [sys.executable, "-m", "timer_controller", "worker"],
}


def cpu_s(pid: int) -> float:
    """CPU seconds of one live process, summed over its live threads.

    Read from each thread's schedstat, in nanoseconds: /proc/<pid>/stat counts
    in 10 ms ticks, which rounds a short trial's pod down to 0. Threads that
    already exited are not counted; the pods' threads live as long as they do.
    Falls back to the tick counts where schedstat is missing.
    """
    total_ns, seen = 0, False
    for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total_ns += int(task.read_text().split()[0])
            seen = True
        except (OSError, ValueError, IndexError):
            continue  # the thread ended while we looked
    if seen:
        return total_ns / 1e9
    return process_cpu_s(pid)


def process_cpu_s(pid: int) -> float:
    """CPU seconds of one process, its exited threads included, in 10 ms ticks.

    For a server whose threads come and go (MariaDB ends a connection's
    thread once its thread cache is full): summing the live threads, as
    cpu_s does, loses an exited thread's whole CPU and could even make a
    trial's difference negative.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces; fields restart after its ')'.
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def find_pid(names: tuple[str, ...]) -> int | None:
    """The first process whose command name is one of ``names`` (the local database)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in names:
                    return int(entry.name)
            except OSError:  # the process ended while we looked
                continue
    return None


def peak_rss_mb(pid: int) -> float:
    """VmHWM, the resident set's high-water mark, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class ReceiverProcess:
    """``bench/receiver.py`` as a child process, plus its control endpoints."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._proc = subprocess.Popen(
            [sys.executable, str(RECEIVER_SCRIPT), "--host", host, "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._proc.stdout is not None
        line = _read_line(self._proc.stdout, START_TIMEOUT_S)
        if not line.startswith("listening on "):
            self.stop()
            raise RuntimeError(f"receiver did not start: {line!r}")
        self.url = line.removeprefix("listening on ").strip()
        self.pid = self._proc.pid
        self._client = httpx.Client(base_url=self.url, timeout=30.0)

    def stats(self) -> dict[str, int]:
        result: dict[str, int] = self._client.get("/_stats").json()
        return result

    def records(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._client.get("/_records").json()
        return result

    def reset(self) -> None:
        self._client.post("/_reset").raise_for_status()

    def stop(self) -> None:
        if hasattr(self, "_client"):
            self._client.close()
        _terminate(self._proc)


def _read_line(stream: IO[str], timeout_s: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout=timeout_s):
            return ""
    return stream.readline()


def _terminate(proc: subprocess.Popen[Any], *, signalled: bool = False) -> int:
    # Signal once only: a second SIGTERM can land after the child's asyncio loop
    # has removed its handler, and would kill a clean shutdown mid-way.
    if not signalled and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)
        return -signal.SIGKILL


@dataclass
class Pod:
    mode: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])


class PodGroup:
    """K processes of one mode sharing one database."""

    def __init__(
        self, mode: str, count: int, env: dict[str, str], log_dir: Path, label: str = ""
    ) -> None:
        self.pods: list[Pod] = []
        for index in range(count):
            log_path = log_dir / f"{label}{mode}-{index}.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    MODE_COMMANDS[mode],
                    env=child_env({**env, "POD_NAME": f"bench-{mode}-{index}"}),
                    cwd=REPO_ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            self.pods.append(Pod(mode, proc, log_path))

    def check_alive(self) -> None:
        for pod in self.pods:
            code = pod.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"a {pod.mode} pod exited early with code {code}: {pod.log_tail()}"
                )

    def cpu_s(self) -> float:
        return sum(cpu_s(pod.proc.pid) for pod in self.pods)

    def per_pod_cpu_s(self) -> list[float]:
        return [cpu_s(pod.proc.pid) for pod in self.pods]

    def peak_rss_mb(self) -> float:
        return max(peak_rss_mb(pod.proc.pid) for pod in self.pods)

    def wait_idle(self, timeout_s: float, window_s: float = 0.25, windows: int = 2) -> None:
        """Wait until start-up (imports, connecting) is over: CPU use has settled.

        Start-up CPU must not count as work, and a pod still importing must
        not miss the start of a burst. Several quiet windows in a row, because
        a pod briefly blocked on I/O during start-up is quiet for a moment too.
        """
        deadline = time.monotonic() + timeout_s
        before = self.per_pod_cpu_s()
        quiet = 0
        while time.monotonic() < deadline:
            time.sleep(window_s)  # a sampling interval, not synchronisation
            self.check_alive()
            after = self.per_pod_cpu_s()
            busy = any(a - b >= window_s * 0.2 for a, b in zip(after, before, strict=True))
            quiet = 0 if busy else quiet + 1
            if quiet >= windows:
                return
            before = after
        raise RuntimeError(f"{self.pods[0].mode} pods still busy after {timeout_s:.0f} s")

    def stop(self) -> list[int]:
        """SIGTERM every pod at once (graceful stop), then collect exit codes."""
        for pod in self.pods:
            if pod.proc.poll() is None:
                pod.proc.send_signal(signal.SIGTERM)
        return [_terminate(pod.proc, signalled=True) for pod in self.pods]
