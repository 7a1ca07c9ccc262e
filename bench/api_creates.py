"""api: creates over HTTP from one ``timer-controller api`` process, beside raw INSERT loops.

Four timings on the same database in the same run:

* **api single**: ``POST /v1/timers`` from N concurrent keep-alive connections;
* **raw single**: one-row ``INSERT``s, autocommit, one MySQLdb connection;
* **api batch**: ``POST /v1/timers/batch`` of B timers, one after another;
* **raw multi-row**: one B-row ``INSERT`` and a COMMIT per batch, one connection.

Timers are due an hour ahead and no controller runs, so only creating is measured.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import db
from bench.http_client import KeepAlive
from bench.metrics import percentile
from bench.procs import START_TIMEOUT_S, _terminate, cpu_s

log = logging.getLogger(__name__)

URL = "http://127.0.0.1:9/bench-api"
DUE_IN_S = 3600
#: Requests sent before timing starts: connections opened, code paths warm.
WARMUP_REQUESTS = 200
READY_LINE = "api listening on http://"
RUN_TIMEOUT_S = 900


@dataclass
class ApiTiming:
    mode: str
    clients: int
    #: Timers created (the batches' rows for batch modes).
    timers: int
    requests: int
    seconds: float
    #: Per request, in milliseconds.
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    #: CPU seconds of the api process while this ran (None for raw modes).
    api_cpu_s: float | None = None
    #: CPU seconds of the harness (the clients, or the raw loop) while this ran: it
    #: shares the machine's cores with the api and the database.
    client_cpu_s: float = 0.0

    @property
    def timers_per_s(self) -> float:
        return self.timers / self.seconds if self.seconds > 0 else math.nan

    def stat(self, pct: float) -> float:
        return percentile(self.latencies_ms, pct)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "clients": self.clients,
            "timers": self.timers,
            "requests": self.requests,
            "seconds": self.seconds,
            "timers_per_s": self.timers_per_s,
            "p50_ms": self.stat(50),
            "p99_ms": self.stat(99),
            "errors": self.errors,
            "api_cpu_s": self.api_cpu_s,
            "client_cpu_s": self.client_cpu_s,
        }


@dataclass
class ApiResult:
    timings: list[ApiTiming]
    note: str = ""

    def find(self, mode: str) -> ApiTiming | None:
        return next((t for t in self.timings if t.mode == mode), None)


class ApiProcess:
    """``python -m timer_controller api`` on a free port, logging to a file."""

    def __init__(self, server: db.Server, database: str, log_path: Path) -> None:
        self.token = secrets.token_urlsafe(24)
        env = {
            **server.env(database),
            "API_TOKENS": self.token,
            "API_HOST": "127.0.0.1",
            "API_PORT": "0",
            "LOG_LEVEL": "INFO",
        }
        self._log_path = log_path
        with log_path.open("wb") as out:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "timer_controller", "api"],
                env=db.child_env(env),
                cwd=db.REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.pid = self._proc.pid
        self.base_url = self._wait_listening()

    def _wait_listening(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S * 2
        while time.monotonic() < deadline:
            for line in self._log_path.read_text(errors="replace").splitlines():
                if READY_LINE in line:
                    port = line.rsplit(":", 1)[1].strip()
                    return f"http://127.0.0.1:{port}"
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)  # polling a log file, not synchronisation
        tail = " | ".join(self._log_path.read_text(errors="replace").splitlines()[-5:])
        self.stop()
        raise RuntimeError(f"the api did not start: {tail}")

    def stop(self) -> int:
        return _terminate(self._proc)


async def _post_many(
    base_url: str,
    token: str,
    *,
    path: str,
    bodies: list[Any],
    warmup: list[Any],
    clients: int,
) -> tuple[list[float], int, float, float]:
    """POST ``warmup``, then every body ``clients`` at a time (timed).

    Each client is one keep-alive connection with one request outstanding
    (``http_client.py``). Returns the timed requests' latencies (ms), how many
    failed, the wall seconds and the CPU seconds this process (the clients)
    spent meanwhile.
    """
    auth = {"Authorization": f"Bearer {token}"}
    connections = [KeepAlive(base_url, auth) for _ in range(clients)]
    latencies: list[float] = []
    errors = 0
    queue = iter(bodies)

    async def client(connection: KeepAlive) -> None:
        nonlocal errors
        for body in queue:
            started = time.perf_counter()
            status, _ = await connection.post(path, body)
            latencies.append((time.perf_counter() - started) * 1000)
            if status not in (200, 201):
                errors += 1

    async def drain(connection: KeepAlive, bodies: Iterator[Any]) -> None:
        for body in bodies:
            await connection.post(path, body)

    try:
        warm = iter(warmup)
        await asyncio.wait_for(asyncio.gather(*(drain(c, warm) for c in connections)), 60)
        started, cpu_started = time.perf_counter(), time.process_time()
        async with asyncio.timeout(RUN_TIMEOUT_S):  # an api that stops answering ends the run
            await asyncio.gather(*(client(c) for c in connections))
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    finally:
        for connection in connections:
            connection.close()
    return latencies, errors, wall, cpu


def api_single(api: ApiProcess, *, creates: int, clients: int) -> ApiTiming:
    def body(name: str) -> dict[str, Any]:
        return {"url": f"{URL}/{name}", "delay": DUE_IN_S}

    bodies = [body(str(i)) for i in range(creates)]
    warmup = [body(f"warm/{i}") for i in range(WARMUP_REQUESTS)]
    cpu_before = cpu_s(api.pid)
    latencies, errors, wall, client_cpu = asyncio.run(
        _post_many(
            api.base_url,
            api.token,
            path="/v1/timers",
            bodies=bodies,
            warmup=warmup,
            clients=clients,
        )
    )
    cpu = cpu_s(api.pid) - cpu_before
    return ApiTiming(
        "api single", clients, creates, creates, wall, latencies, errors, cpu, client_cpu
    )


def api_batch(api: ApiProcess, *, batches: int, size: int) -> ApiTiming:
    def batch(name: str) -> dict[str, Any]:
        return {"timers": [{"url": f"{URL}/{name}/{i}", "delay": DUE_IN_S} for i in range(size)]}

    bodies = [batch(str(b)) for b in range(batches)]
    cpu_before = cpu_s(api.pid)
    # One batch at a time, after one untimed batch.
    latencies, errors, wall, client_cpu = asyncio.run(
        _post_many(
            api.base_url,
            api.token,
            path="/v1/timers/batch",
            bodies=bodies,
            warmup=[batch("warm")],
            clients=1,
        )
    )
    cpu = cpu_s(api.pid) - cpu_before
    return ApiTiming(
        "api batch", 1, batches * size, batches, wall, latencies, errors, cpu, client_cpu
    )


def raw_single(conn: Any, *, creates: int) -> ApiTiming:
    cur = conn.cursor()
    sql = "INSERT INTO tasks (url, due_at) VALUES (%s, UTC_TIMESTAMP(6) + INTERVAL %s SECOND)"
    latencies: list[float] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for i in range(creates):
        t0 = time.perf_counter()
        cur.execute(sql, (f"{URL}/raw/{i}", DUE_IN_S))  # autocommit: one transaction each
        latencies.append((time.perf_counter() - t0) * 1000)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return ApiTiming("raw single", 1, creates, creates, wall, latencies, client_cpu_s=cpu)


def raw_multirow(conn: Any, *, batches: int, size: int) -> ApiTiming:
    cur = conn.cursor()
    values = ", ".join(["(%s, UTC_TIMESTAMP(6) + INTERVAL 3600 SECOND)"] * size)
    sql = f"INSERT INTO tasks (url, due_at) VALUES {values}"
    latencies: list[float] = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for b in range(batches):
        t0 = time.perf_counter()
        cur.execute("START TRANSACTION")
        cur.execute(sql, [f"{URL}/raw/{b}/{i}" for i in range(size)])
        cur.execute("COMMIT")
        latencies.append((time.perf_counter() - t0) * 1000)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return ApiTiming("raw multi-row", 1, batches * size, batches, wall, latencies, client_cpu_s=cpu)


def run(
    server: db.Server,
    database: str,
    conn: Any,
    log_dir: Path,
    *,
    creates: int,
    clients: int,
    batches: int,
    batch_size: int,
) -> ApiResult:
    """Every timing, the api's and the raw loops', against ``database``."""
    api = ApiProcess(server, database, log_dir / "api.log")
    try:
        log.info("api: %d single creates from %d clients", creates, clients)
        single = api_single(api, creates=creates, clients=clients)
        log.info("api: %d batches of %d", batches, batch_size)
        batch = api_batch(api, batches=batches, size=batch_size)
    finally:
        code = api.stop()
    log.info("raw: the same single and multi-row INSERT loops")
    timings = [
        single,
        raw_single(conn, creates=creates),
        batch,
        raw_multirow(conn, batches=batches, size=batch_size),
    ]
    note = "" if code == 0 else f"the api exited with code {code}"
    if any(t.errors for t in timings):
        note = "; ".join(filter(None, [note, "some requests failed (see errors)"]))
    return ApiResult(timings, note)
