"""The dispatcher's direct path (``GuardedAiohttpTransport.exchange``) against real sockets.

Without FOLLOW_REDIRECTS a webhook goes straight through the aiohttp
session, with no ``httpx.Request`` or ``httpx.Response``. These tests hold
it to the httpx path it replaced: the same bytes on the wire, the same
outcome for every way a request can end, the same read limit.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from timer_controller.delivery.dispatch import Dispatcher, Exchanger, Send
from timer_controller.delivery.policy import TargetPolicy
from timer_controller.delivery.transport import GuardedAiohttpTransport
from timer_controller.domain.task import ClaimedTask, Outcome, OutcomeClass

OPEN = TargetPolicy()
BLOCK = TargetPolicy(block_private_networks=True)
DB_NOW = datetime(2026, 1, 1)
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
PATHS = ("direct", "httpx")


@dataclass
class RawServer:
    """Answers every request with ``answer`` and keeps each request's bytes."""

    answer: bytes
    port: int = 0
    requests: list[bytes] = field(default_factory=list)
    #: With ``endless`` the body never ends: written until the client hangs up.
    endless: bool = False
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@asynccontextmanager
async def raw_server(answer: bytes = OK, *, endless: bool = False) -> AsyncIterator[RawServer]:
    state = RawServer(answer, endless=endless)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            state.requests.append(head + await reader.readexactly(length))
            writer.write(answer)
            while state.endless:
                writer.write(b"x" * 65536)
                await writer.drain()
            await writer.drain()
        except ConnectionError:
            state.hung_up.set()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state


def task(url: str, **columns: Any) -> ClaimedTask:
    return ClaimedTask(
        id=7, url=url, due_at=datetime(2026, 1, 1), attempt=1, max_attempts=3, **columns
    )


def fire(
    path: str,
    make_task: Callable[[], ClaimedTask],
    *,
    policy: TargetPolicy = OPEN,
    timeout_s: float = 5.0,
) -> Awaitable[Outcome]:
    """Fire one task through ``path``: the transport itself, or httpx's transport API."""

    async def run() -> Outcome:
        transport = GuardedAiohttpTransport(policy=policy, max_connections=4)
        send: Send | Exchanger = transport if path == "direct" else transport.handle_async_request
        dispatcher = Dispatcher(
            send,
            timeout_s=timeout_s,
            policy=policy,
            keys=(b"k" * 32,),
            max_body_bytes=1024,
            db_clock=lambda: DB_NOW,
        )
        try:
            return await dispatcher.fire(make_task())
        finally:
            await transport.aclose()

    return run()


def run(scenario: Awaitable[Any]) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(scenario, timeout=30)

    return asyncio.run(bounded())


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _same_timestamp(raw: bytes) -> bytes:
    """The request with its signing time (and so its signature) blanked out."""
    lines = raw.split(b"\r\n")
    kept = [
        line
        for line in lines
        if not line.lower().startswith((b"webhook-timestamp:", b"webhook-signature:"))
    ]
    return b"\r\n".join(kept)


ROWS: dict[str, dict[str, Any]] = {
    "default-post": {},
    "put-custom-body-and-headers": {
        "method": "PUT",
        "body": '{"hello": "wörld"}',
        "headers": '{"X-Trace": "abc", "Content-Type": "text/plain"}',
    },
    "get": {"method": "GET"},
    "delete": {"method": "DELETE"},
    "post-empty-body": {"body": ""},
}
URLS = {
    "plain": "/hook",
    "query-and-escapes": "/a%20b/c?x=1&y=%C3%A9&z=a+b",
    "unescaped-unicode": "/é/ü?q=ß",
}


@pytest.mark.parametrize("url_path", list(URLS.values()), ids=list(URLS))
@pytest.mark.parametrize("row", list(ROWS.values()), ids=list(ROWS))
def test_the_direct_path_sends_the_bytes_the_httpx_path_sent(
    row: dict[str, Any], url_path: str
) -> None:
    async def scenario() -> tuple[list[bytes], list[Outcome]]:
        async with raw_server() as server:
            outcomes = [
                await fire(path, lambda: task(server.url(url_path), **row)) for path in PATHS
            ]
            return server.requests, outcomes

    requests, outcomes = run(scenario())
    assert [o.klass for o in outcomes] == [OutcomeClass.SUCCESS] * 2
    direct, through_httpx = (_same_timestamp(r) for r in requests)
    assert direct == through_httpx
    assert direct.split(b"\r\n")[1].startswith(b"host: 127.0.0.1:")


ENDINGS: dict[str, tuple[bytes, OutcomeClass, str | None]] = {
    "retryable-status": (
        b"HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
        OutcomeClass.RETRYABLE_STATUS,
        "HTTP 503",
    ),
    "final-status": (
        b"HTTP/1.1 404 Gone\r\nContent-Length: 0\r\n\r\n",
        OutcomeClass.FINAL_STATUS,
        "HTTP 404",
    ),
    "redirect-not-followed": (
        b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n",
        OutcomeClass.FINAL_STATUS,
        "HTTP 302",
    ),
    "hang-up": (b"", OutcomeClass.CONNECT_ERROR, "RemoteProtocolError"),
    "bad-status-line": (b"garbage\r\n\r\n", OutcomeClass.CONNECT_ERROR, "RemoteProtocolError"),
    "short-body": (
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
        OutcomeClass.CONNECT_ERROR,
        "RemoteProtocolError",
    ),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("ending", list(ENDINGS.values()), ids=list(ENDINGS))
def test_each_way_a_request_ends_is_the_same_outcome_on_both_paths(
    ending: tuple[bytes, OutcomeClass, str | None], path: str
) -> None:
    answer, klass, error = ending

    async def scenario() -> Outcome:
        async with raw_server(answer) as server:
            return await fire(path, lambda: task(server.url()))

    outcome = run(scenario())
    assert outcome.klass is klass
    assert error is not None
    assert (outcome.error or "").startswith(error)
    assert outcome.fired_at == DB_NOW


@pytest.mark.parametrize("path", PATHS)
def test_retry_after_reaches_the_outcome(path: str) -> None:
    answer = b"HTTP/1.1 429 Slow down\r\nRetry-After: 42\r\nContent-Length: 0\r\n\r\n"

    async def scenario() -> Outcome:
        async with raw_server(answer) as server:
            return await fire(path, lambda: task(server.url()))

    outcome = run(scenario())
    assert (outcome.klass, outcome.retry_after_s) == (OutcomeClass.RETRYABLE_STATUS, 42.0)


@pytest.mark.parametrize("path", PATHS)
def test_repeated_retry_after_fields_are_read_as_httpx_joins_them(path: str) -> None:
    # httpx reads "5, 9", which is neither delta-seconds nor a date: ignored.
    answer = b"HTTP/1.1 503 Busy\r\nRetry-After: 5\r\nRetry-After: 9\r\nContent-Length: 0\r\n\r\n"

    async def scenario() -> Outcome:
        async with raw_server(answer) as server:
            return await fire(path, lambda: task(server.url()))

    outcome = run(scenario())
    assert (outcome.klass, outcome.retry_after_s) == (OutcomeClass.RETRYABLE_STATUS, None)


@pytest.mark.parametrize("path", PATHS)
def test_an_endless_answer_is_read_no_further_than_the_limit(path: str) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n"

    async def scenario() -> tuple[Outcome, bool]:
        async with raw_server(answer, endless=True) as server:
            outcome = await fire(path, lambda: task(server.url()))
            await server.hung_up.wait()  # bounded by run()'s deadline
            return outcome, server.hung_up.is_set()

    outcome, hung_up = run(scenario())
    assert outcome.klass is OutcomeClass.SUCCESS
    assert hung_up  # the rest was never read: the connection was closed, not drained


@pytest.mark.parametrize("path", PATHS)
def test_a_closed_port_is_a_refused_connection(path: str) -> None:
    outcome = run(fire(path, lambda: task(f"http://127.0.0.1:{closed_port()}/hook")))
    assert (outcome.klass, outcome.error) == (OutcomeClass.CONNECT_ERROR, "connection refused")


@pytest.mark.parametrize("path", PATHS)
def test_a_silent_server_times_out(path: str) -> None:
    async def scenario() -> Outcome:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1)
            await asyncio.Event().wait()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            outcome = await fire(path, lambda: task(f"http://127.0.0.1:{port}/"), timeout_s=0.3)
            server.close()
            return outcome

    outcome = run(scenario())
    assert (outcome.klass, outcome.error) == (OutcomeClass.TIMEOUT, "timed out after 0.3s")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_blocked_destination_is_refused_before_connecting(path: str, host: str) -> None:
    # The literal IP is checked by the transport; "localhost" by the resolver it connects with.
    async def scenario() -> tuple[Outcome, list[bytes]]:
        async with raw_server() as server:
            outcome = await fire(path, lambda: task(server.url(host=host)), policy=BLOCK)
            return outcome, server.requests

    outcome, requests = run(scenario())
    assert (outcome.klass, outcome.error, outcome.fired_at) == (
        OutcomeClass.INVALID,
        "blocked destination",
        None,
    )
    assert requests == []


@pytest.mark.parametrize("path", PATHS)
def test_a_legacy_numeric_host_is_a_malformed_url(path: str) -> None:
    async def scenario() -> tuple[Outcome, list[bytes]]:
        async with raw_server() as server:
            outcome = await fire(path, lambda: task(server.url(host="2130706433")))
            return outcome, server.requests

    outcome, requests = run(scenario())
    assert outcome.klass is OutcomeClass.INVALID
    assert "non-canonical IPv4 address" in (outcome.error or "")
    assert requests == []


def test_the_transport_is_an_exchanger_and_its_request_method_is_not() -> None:
    transport = GuardedAiohttpTransport(policy=OPEN, max_connections=1)
    assert isinstance(transport, Exchanger)
    assert not isinstance(transport.handle_async_request, Exchanger)
