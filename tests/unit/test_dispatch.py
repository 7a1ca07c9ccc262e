"""Outcome classification: status codes, connection failures, and fire() on a mock transport."""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

import httpx
import pytest

from timer_controller.delivery.dispatch import Dispatcher, classify_status, describe_connect_error
from timer_controller.delivery.policy import BlockedDestinationError, TargetPolicy
from timer_controller.domain.task import RETRYABLE_CLASSES, ClaimedTask, Outcome, OutcomeClass


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (100, OutcomeClass.FINAL_STATUS),
        (101, OutcomeClass.FINAL_STATUS),
        (200, OutcomeClass.SUCCESS),
        (201, OutcomeClass.SUCCESS),
        (202, OutcomeClass.SUCCESS),
        (204, OutcomeClass.SUCCESS),
        (299, OutcomeClass.SUCCESS),
        (300, OutcomeClass.FINAL_STATUS),
        (301, OutcomeClass.FINAL_STATUS),
        (302, OutcomeClass.FINAL_STATUS),
        (304, OutcomeClass.FINAL_STATUS),
        (307, OutcomeClass.FINAL_STATUS),
        (400, OutcomeClass.FINAL_STATUS),
        (401, OutcomeClass.FINAL_STATUS),
        (403, OutcomeClass.FINAL_STATUS),
        (404, OutcomeClass.FINAL_STATUS),
        (405, OutcomeClass.FINAL_STATUS),
        (407, OutcomeClass.FINAL_STATUS),
        (408, OutcomeClass.RETRYABLE_STATUS),
        (409, OutcomeClass.FINAL_STATUS),
        (410, OutcomeClass.FINAL_STATUS),
        (413, OutcomeClass.FINAL_STATUS),
        (422, OutcomeClass.FINAL_STATUS),
        (428, OutcomeClass.FINAL_STATUS),
        (429, OutcomeClass.RETRYABLE_STATUS),
        (431, OutcomeClass.FINAL_STATUS),
        (451, OutcomeClass.FINAL_STATUS),
        (499, OutcomeClass.FINAL_STATUS),
        (500, OutcomeClass.RETRYABLE_STATUS),
        (501, OutcomeClass.RETRYABLE_STATUS),
        (502, OutcomeClass.RETRYABLE_STATUS),
        (503, OutcomeClass.RETRYABLE_STATUS),
        (504, OutcomeClass.RETRYABLE_STATUS),
        (599, OutcomeClass.RETRYABLE_STATUS),
        (600, OutcomeClass.FINAL_STATUS),
    ],
)
def test_classify_status(code: int, expected: OutcomeClass) -> None:
    assert classify_status(code) is expected


def test_retryable_classes_are_exactly_connect_errors_timeouts_and_retryable_statuses() -> None:
    assert (
        frozenset({OutcomeClass.CONNECT_ERROR, OutcomeClass.TIMEOUT, OutcomeClass.RETRYABLE_STATUS})
        == RETRYABLE_CLASSES
    )


class _ConnectorError(OSError):
    """Like aiohttp's ClientConnectorError: an OSError subclass carrying the errno."""


def _raised_from(outer: BaseException, *causes: BaseException) -> BaseException:
    """``outer`` with ``causes`` as its explicit ``__cause__`` chain, as ``raise … from`` builds."""
    link = outer
    for cause in causes:
        link.__cause__ = cause
        link = cause
    return outer


def _raised_during(outer: BaseException, context: BaseException) -> BaseException:
    """``outer`` raised while handling ``context`` (implicit chaining, no ``from``)."""
    try:
        try:
            raise context
        except BaseException:
            raise outer  # noqa: B904 - the implicit __context__ is the point
    except BaseException as caught:
        return caught


REFUSED = ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused")
GAIERROR = socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        # httpcore: ConnectError(str(os_error)) from the OSError.
        (
            _raised_from(httpx.ConnectError("[Errno 111] Connection refused"), REFUSED),
            "connection refused",
        ),
        # anyio/httpcore: a generic message whose cause chain holds the refusal.
        (
            _raised_from(
                httpx.ConnectError("All connection attempts failed"),
                OSError("All connection attempts failed"),
                ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"),
            ),
            "connection refused",
        ),
        # aiohttp-style: an OSError subclass that carries errno ECONNREFUSED.
        (
            _raised_from(
                httpx.ConnectError("cannot connect to 127.0.0.1:9"),
                _ConnectorError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 9)"),
            ),
            "connection refused",
        ),
        # Implicit chaining (raised inside an except block) counts too.
        (_raised_during(httpx.ConnectError("cannot connect"), REFUSED), "connection refused"),
        (
            _raised_from(
                httpx.ConnectError("cannot connect"),
                RuntimeError("wrapper"),
                RuntimeError("another wrapper"),
                ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
            ),
            "connection refused",
        ),
        # No chain at all: the words decide.
        (httpx.ConnectError("Connection refused by peer"), "connection refused"),
        # DNS failures, as glibc, musl/macOS and the project's transport word them.
        (
            _raised_from(httpx.ConnectError("[Errno -2] Name or service not known"), GAIERROR),
            "DNS lookup failed",
        ),
        (
            _raised_from(
                httpx.ConnectError("[Errno -3] Temporary failure in name resolution"),
                socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution"),
            ),
            "DNS lookup failed",
        ),
        (
            httpx.ConnectError("[Errno 8] nodename nor servname provided, or not known"),
            "DNS lookup failed",
        ),
        (
            httpx.ConnectError("[Errno -5] No address associated with hostname"),
            "DNS lookup failed",
        ),
        (
            _raised_from(
                httpx.ConnectError(
                    "DNS lookup failed for nosuch.invalid: [Errno -2] Name or service not known"
                ),
                GAIERROR,
            ),
            "DNS lookup failed",
        ),
        (httpx.ConnectError("getaddrinfo failed"), "DNS lookup failed"),
        # Anything else: a generic reason with the message, or the type when it is empty.
        (
            _raised_from(
                httpx.ConnectError("[Errno 104] Connection reset by peer"),
                ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
            ),
            "connection failed: [Errno 104] Connection reset by peer",
        ),
        (
            _raised_from(
                httpx.ConnectError("[Errno 113] No route to host"),
                OSError(errno.EHOSTUNREACH, "No route to host"),
            ),
            "connection failed: [Errno 113] No route to host",
        ),
        (httpx.ConnectError(""), "connection failed: ConnectError"),
        (httpx.ConnectError("x" * 500), "connection failed: " + "x" * 200),
    ],
)
def test_describe_connect_error(exc: BaseException, expected: str) -> None:
    assert describe_connect_error(exc) == expected


@pytest.mark.parametrize(
    "message",
    [
        "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate",
        "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)",
    ],
)
def test_describe_connect_error_names_tls_failures(message: str) -> None:
    exc = _raised_from(httpx.ConnectError(message), ssl.SSLError(1, message))

    assert describe_connect_error(exc) == f"TLS error: {message}"


def test_describe_connect_error_truncates_a_long_tls_message() -> None:
    message = "certificate verify failed: " + "y" * 400

    assert describe_connect_error(httpx.ConnectError(message)) == f"TLS error: {message[:200]}"


def test_describe_connect_error_ends_on_a_cyclic_chain() -> None:
    first = httpx.ConnectError("cannot connect")
    second = RuntimeError("loop")
    first.__cause__ = second
    second.__cause__ = first

    assert describe_connect_error(first) == "connection failed: cannot connect"


# --- Dispatcher.fire over httpx.MockTransport: in-memory, no sockets ----------------------

DB_NOW = datetime(2025, 1, 1, 0, 0, 0)
Handler = Callable[[httpx.Request], httpx.Response]


def _fire(task: ClaimedTask, handler: Handler) -> tuple[Outcome, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    async def run() -> Outcome:
        transport = httpx.MockTransport(recording)
        dispatcher = Dispatcher(
            transport.handle_async_request,
            timeout_s=5.0,
            policy=TargetPolicy(),
            keys=(),
            max_body_bytes=1024,
            db_clock=lambda: DB_NOW,
        )
        return await dispatcher.fire(task)

    return asyncio.run(run()), seen


def _answer(status: int, retry_after: bytes | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        headers = [] if retry_after is None else [(b"retry-after", retry_after)]
        # A stream, as a real transport gives: fire() reads the body itself.
        return httpx.Response(status, headers=headers, stream=httpx.ByteStream(b"ok"))

    return handler


def _raise(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


TASK = ClaimedTask(
    id=9, url="http://hooks.example.com/t", due_at=DB_NOW, attempt=1, max_attempts=None
)


@pytest.mark.parametrize(
    ("status", "retry_after", "klass", "error", "retry_after_s"),
    [
        (200, None, OutcomeClass.SUCCESS, None, None),
        (204, b"30", OutcomeClass.SUCCESS, None, 30.0),
        (503, b"7", OutcomeClass.RETRYABLE_STATUS, "HTTP 503", 7.0),
        (429, b"Wed, 01 Jan 2025 00:00:30 GMT", OutcomeClass.RETRYABLE_STATUS, "HTTP 429", 30.0),
        (500, b"tomorrow", OutcomeClass.RETRYABLE_STATUS, "HTTP 500", None),
        (410, None, OutcomeClass.FINAL_STATUS, "HTTP 410", None),
        (302, None, OutcomeClass.FINAL_STATUS, "HTTP 302", None),
    ],
)
def test_fire_maps_the_response(
    status: int,
    retry_after: bytes | None,
    klass: OutcomeClass,
    error: str | None,
    retry_after_s: float | None,
) -> None:
    outcome, seen = _fire(TASK, _answer(status, retry_after))

    assert (outcome.task_id, outcome.klass, outcome.status_code) == (9, klass, status)
    assert (outcome.error, outcome.retry_after_s, outcome.fired_at) == (
        error,
        retry_after_s,
        DB_NOW,
    )
    (request,) = seen
    assert request.method == "POST"
    assert request.headers["webhook-id"] == "9"


@pytest.mark.parametrize(
    ("exc", "klass", "error"),
    [
        (
            _raised_from(httpx.ConnectError("[Errno 111] Connection refused"), REFUSED),
            OutcomeClass.CONNECT_ERROR,
            "connection refused",
        ),
        (httpx.ReadTimeout("read timed out"), OutcomeClass.TIMEOUT, "timed out after 5s"),
        (
            httpx.RemoteProtocolError("server disconnected without sending a response"),
            OutcomeClass.CONNECT_ERROR,
            "RemoteProtocolError: server disconnected without sending a response",
        ),
        (
            RuntimeError("surprise"),
            OutcomeClass.CONNECT_ERROR,
            "unexpected error: RuntimeError: surprise",
        ),
    ],
)
def test_fire_maps_transport_failures(exc: Exception, klass: OutcomeClass, error: str) -> None:
    outcome, _ = _fire(TASK, _raise(exc))

    assert (outcome.klass, outcome.error, outcome.status_code) == (klass, error, None)


def test_fire_does_not_send_an_invalid_row() -> None:
    outcome, seen = _fire(replace(TASK, method="TRACE"), _answer(200))

    assert outcome.klass is OutcomeClass.INVALID
    assert outcome.error is not None
    assert outcome.error.startswith("method 'TRACE' is not allowed")
    assert seen == []
    assert outcome.fired_at is None  # nothing was sent, so nothing fired


def test_fire_gives_no_fired_at_to_a_destination_refused_before_sending() -> None:
    outcome, _ = _fire(TASK, _raise(BlockedDestinationError("10.0.0.1 is private")))

    assert (outcome.klass, outcome.error) == (OutcomeClass.INVALID, "blocked destination")
    assert outcome.fired_at is None


def test_fire_gives_a_fired_at_to_a_request_that_was_sent_and_failed() -> None:
    outcome, _ = _fire(TASK, _raise(httpx.ReadTimeout("read timed out")))

    assert outcome.fired_at == DB_NOW


def test_fire_fails_a_row_whose_header_value_cannot_be_sent() -> None:
    outcome, seen = _fire(replace(TASK, headers='{"X-Name": "café"}'), _answer(200))

    assert outcome.klass is OutcomeClass.INVALID
    assert seen == []


def test_fire_survives_a_hostile_retry_after() -> None:
    outcome, _ = _fire(TASK, _answer(503, b"\xb2"))

    assert (outcome.klass, outcome.retry_after_s) == (OutcomeClass.RETRYABLE_STATUS, None)
