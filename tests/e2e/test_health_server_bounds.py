"""The metrics and health server under hostile clients, with real sockets.

Idle, slow and oversized connections must neither multiply threads nor
lock out a scrape.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.waiting import wait_until
from timer_controller.ops import http_server
from timer_controller.ops.metrics import HealthServer, Metrics

IDLE_CONNECTIONS = 1000


@pytest.fixture
def server() -> Iterator[HealthServer]:
    health = HealthServer(
        Metrics(), port=0, alive=lambda: True, ready=lambda: True, host="127.0.0.1"
    )
    health.start()
    try:
        yield health
    finally:
        health.stop()


def _get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)


def test_a_thousand_idle_connections_start_no_threads_and_a_scrape_still_answers(
    server: HealthServer,
) -> None:
    threads_before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(IDLE_CONNECTIONS)]
    try:
        started = time.monotonic()
        response = _get(server.port, "/metrics")
        took_s = time.monotonic() - started

        assert response.status_code == 200
        assert b"timer_tasks_claimed_total" in response.content
        assert took_s < http_server.READ_TIMEOUT_S, "the scrape waited behind idle sockets"
        # At most the server thread and its one worker, however many sockets.
        assert threading.active_count() - threads_before <= 2
    finally:
        for sock in idle:
            sock.close()


def test_an_idle_connection_is_closed_after_the_read_timeout(server: HealthServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(http_server.READ_TIMEOUT_S * 3)
        started = time.monotonic()
        assert sock.recv(1) == b""  # closed by the server
        assert time.monotonic() - started < http_server.READ_TIMEOUT_S * 2


def test_an_oversized_request_head_is_dropped_and_the_server_keeps_serving(
    server: HealthServer,
) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        big = b"GET /metrics HTTP/1.1\r\nX-Junk: " + b"a" * (http_server.MAX_HEAD_BYTES * 4)
        try:
            sock.sendall(big + b"\r\n\r\n")
            answer = sock.recv(100)
        except ConnectionResetError:
            answer = b""
        assert not answer.startswith(b"HTTP/1.1 200")

    assert _get(server.port, "/healthz").status_code == 200


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
        (b"GET /readyz?probe=1 HTTP/1.0\r\n\r\n", b"200"),
        (b"GET /nope HTTP/1.1\r\n\r\n", b"404"),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"garbage\r\n\r\n", b"400"),
    ],
)
def test_answers(server: HealthServer, request_bytes: bytes, status: bytes) -> None:
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.settimeout(10)
        sock.sendall(request_bytes)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk

    assert reply.split(b" ", 2)[1] == status, reply
    assert b"Connection: close" in reply


def test_a_hung_readiness_check_answers_503_within_the_deadline() -> None:
    release = threading.Event()
    health = HealthServer(
        Metrics(), port=0, alive=lambda: True, ready=lambda: release.wait(60), host="127.0.0.1"
    )
    health.start()
    try:
        started = time.monotonic()
        assert _get(health.port, "/readyz").status_code == 503
        assert time.monotonic() - started < http_server.ANSWER_TIMEOUT_S + 3
    finally:
        release.set()
        health.stop()


def test_stop_ends_the_server_thread() -> None:
    health = HealthServer(
        Metrics(), port=0, alive=lambda: True, ready=lambda: True, host="127.0.0.1"
    )
    health.start()
    assert _get(health.port, "/healthz").status_code == 200

    health.stop()

    wait_until(
        lambda: not any(t.name == "http-server" for t in threading.enumerate()),
        timeout_s=10,
        what="the server thread to end",
    )
