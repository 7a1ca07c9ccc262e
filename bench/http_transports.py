"""POSTs per second of several HTTP client set-ups against a fast local receiver.

Run: python bench/http_transports.py [--requests 3000] [--concurrency 10,100,500]

The receiver is a separate process on 127.0.0.1: a bare asyncio protocol that
answers every request with a fixed small JSON body, fast enough that the
client's own overhead is what gets measured. On a machine with two or more
cores the receiver and the client are pinned to different cores.

Every client sends the same small JSON body and reads the whole response.
Each cell runs a short warm-up (so connection set-up is not counted), then a
fixed number of requests from ``concurrency`` workers. Rounds repeat every
cell, interleaved, and the best rate counts, because a shared machine's other
load only ever slows a cell down. The result is a markdown table with each
set-up's rate as a ratio to raw aiohttp. aiohttp-based set-ups keep their
default pool of 100 connections (the controller's default MAX_IN_FLIGHT);
"tuned Limits" gives httpx one connection per concurrent request.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import os
import platform
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import httpx
import httpx_aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from timer_controller.delivery.policy import TargetPolicy
from timer_controller.delivery.transport import make_http_client

BODY = b'{"task_id": "3f1c2a", "payload": {"kind": "reminder", "n": 1}}'
HEADERS = {"Content-Type": "application/json"}
RESPONSE = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
)
CLIENTS = 4
# httpx's default 5 s pool timeout ends the c=500 httpx-default cell in
# PoolTimeout; a long timeout measures throughput instead.
TIMEOUT = httpx.Timeout(60.0)
# The controller's default MAX_IN_FLIGHT, which it passes as max_connections;
# aiohttp's and httpx-aiohttp's default pool size is the same 100.
MAX_IN_FLIGHT = 100

Send = Callable[[], Awaitable[None]]


class _Receiver(asyncio.Protocol):
    """Minimal HTTP/1.1 keep-alive responder: Content-Length bodies only."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._buffer = b""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\r\n\r\n")) >= 0:
            head = self._buffer[:end].lower()
            start = head.find(b"content-length:")
            length = int(head[start + 15 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
            if len(self._buffer) < end + 4 + length:
                return
            self._buffer = self._buffer[end + 4 + length :]
            self._transport.write(RESPONSE)


async def _serve() -> None:
    server = await asyncio.get_running_loop().create_server(_Receiver, "127.0.0.1", 0, backlog=2048)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


def _start_receiver() -> tuple[subprocess.Popen[str], int]:
    receiver = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    assert receiver.stdout is not None
    return receiver, int(receiver.stdout.readline())


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {core})


def _httpx_send(clients: list[httpx.AsyncClient], url: str) -> Send:
    turn = itertools.cycle(clients)

    async def send() -> None:
        response = await next(turn).post(url, content=BODY, headers=HEADERS)
        if response.status_code != 200:
            raise RuntimeError(f"unexpected status {response.status_code}")

    return send


async def _raw_aiohttp(stack: AsyncExitStack, url: str, concurrency: int) -> Send:
    session = await stack.enter_async_context(aiohttp.ClientSession())

    async def send() -> None:
        async with session.post(url, data=BODY, headers=HEADERS) as response:
            await response.read()
            if response.status != 200:
                raise RuntimeError(f"unexpected status {response.status}")

    return send


def _httpx_setup(
    make: Callable[[int], httpx.AsyncClient], count: int = 1
) -> Callable[[AsyncExitStack, str, int], Awaitable[Send]]:
    async def setup(stack: AsyncExitStack, url: str, concurrency: int) -> Send:
        clients = [await stack.enter_async_context(make(concurrency)) for _ in range(count)]
        return _httpx_send(clients, url)

    return setup


def _tuned_limits(concurrency: int) -> httpx.Limits:
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


def _chosen(connections: int = MAX_IN_FLIGHT) -> httpx.AsyncClient:
    return make_http_client(
        timeout_s=60.0,
        max_connections=connections,
        follow_redirects=False,
        policy=TargetPolicy(),
        user_agent="bench",
    )


SETUPS: dict[str, Callable[[AsyncExitStack, str, int], Awaitable[Send]]] = {
    "raw aiohttp": _raw_aiohttp,
    "httpx default": _httpx_setup(lambda c: httpx.AsyncClient(timeout=TIMEOUT)),
    "httpx + tuned Limits": _httpx_setup(
        lambda c: httpx.AsyncClient(timeout=TIMEOUT, limits=_tuned_limits(c))
    ),
    f"{CLIENTS} httpx clients, tuned, round-robin": _httpx_setup(
        lambda c: httpx.AsyncClient(timeout=TIMEOUT, limits=_tuned_limits(max(c // CLIENTS, 1))),
        CLIENTS,
    ),
    "httpx-aiohttp transport": _httpx_setup(
        lambda c: httpx.AsyncClient(timeout=TIMEOUT, transport=httpx_aiohttp.AiohttpTransport())
    ),
    f"{CLIENTS} httpx-aiohttp clients, round-robin": _httpx_setup(
        lambda c: httpx.AsyncClient(timeout=TIMEOUT, transport=httpx_aiohttp.AiohttpTransport()),
        CLIENTS,
    ),
    f"{CLIENTS} make_http_client clients, round-robin": _httpx_setup(
        lambda c: _chosen(MAX_IN_FLIGHT // CLIENTS), CLIENTS
    ),
    "make_http_client (chosen)": _httpx_setup(lambda c: _chosen()),
}


async def _drive(send: Send, concurrency: int, total: int) -> float:
    """Seconds to complete ``total`` requests with ``concurrency`` workers."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await send()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


async def _measure(url: str, name: str, concurrency: int, total: int) -> float:
    async with AsyncExitStack() as stack:
        send = await SETUPS[name](stack, url, concurrency)
        await _drive(send, concurrency, min(total, 2 * concurrency))
        return total / await _drive(send, concurrency, total)


def _table(rates: dict[str, dict[int, float]], levels: list[int]) -> str:
    baseline = rates["raw aiohttp"]
    lines = [
        "| set-up | " + " | ".join(f"c={c} req/s (x raw)" for c in levels) + " |",
        "|---|" + "---:|" * len(levels),
    ]
    for name, row in rates.items():
        cells = [
            f"{row[c]:,.0f} ({row[c] / baseline[c]:.2f})" if row.get(c) else "failed"
            for c in levels
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _run_all(url: str, levels: list[int], total: int, rounds: int) -> dict[str, dict[int, float]]:
    """Best rate of each cell over the rounds; rounds interleave all set-ups."""
    rates: dict[str, dict[int, float]] = {name: {} for name in SETUPS}
    for round_no, name, level in itertools.product(range(1, rounds + 1), SETUPS, levels):
        try:
            rate = asyncio.run(_measure(url, name, level, total))
        except Exception as exc:  # a failing set-up is a result, not a crash
            print(f"{name} c={level}: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        rates[name][level] = max(rate, rates[name].get(level, 0.0))
        print(f"round {round_no} {name:48} c={level:<4} {rate:8,.0f} req/s", file=sys.stderr)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per cell")
    parser.add_argument("--concurrency", default="10,100,500", help="comma-separated levels")
    parser.add_argument("--rounds", type=int, default=3, help="report the best of this many")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _pin(1)
        asyncio.run(_serve())
        return
    levels = [int(c) for c in args.concurrency.split(",")]
    _pin(0)
    load_before = os.getloadavg()[0]
    receiver, port = _start_receiver()
    try:
        rates = _run_all(f"http://127.0.0.1:{port}/hook", levels, args.requests, args.rounds)
    finally:
        receiver.terminate()
        receiver.wait()
    load_after = os.getloadavg()[0]
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    print(
        f"{now}; Python {platform.python_version()}; {os.cpu_count()} cores; "
        f"httpx {httpx.__version__}; aiohttp {aiohttp.__version__}; "
        f"{args.requests} requests per cell, best of {args.rounds} rounds; "
        f"load average {load_before:.1f} before, {load_after:.1f} after\n"
    )
    print(_table(rates, levels))


if __name__ == "__main__":
    main()
