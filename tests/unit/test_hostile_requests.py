"""Rows built to break request building: each fails alone, with a specific reason."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime

import httpx
import pytest

from timer_controller.delivery.dispatch import Dispatcher
from timer_controller.delivery.policy import TargetPolicy
from timer_controller.delivery.redaction import REDACTED, redact_url, scrub
from timer_controller.delivery.request import InvalidTask, parse_headers
from timer_controller.domain.task import ClaimedTask, Outcome, OutcomeClass

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("name", ["X-A\n", "X-A\r\n", "\nX-A", "X-A\r", "X A", "X-A\x00", ""])
def test_a_header_name_with_a_line_break_is_refused(name: str) -> None:
    with pytest.raises(InvalidTask, match="is not a valid HTTP header name"):
        parse_headers(json.dumps({name: "1"}))


@pytest.mark.parametrize("value", ["\x01", "a\x7fb", "\x1b[31m"])
def test_a_header_value_with_a_control_character_is_refused(value: str) -> None:
    with pytest.raises(InvalidTask, match="has a control character in its value"):
        parse_headers(json.dumps({"X-A": value}))


def test_a_header_value_may_hold_a_tab() -> None:
    assert parse_headers('{"X-A": "a\\tb"}') == {"X-A": "a\tb"}


@pytest.mark.parametrize("raw", [DEEP, '{"a": ' + DEEP + "}", "{" * 50_000])
def test_deeply_nested_headers_are_refused(raw: str) -> None:
    with pytest.raises(InvalidTask, match="headers is"):
        parse_headers(raw)


def _fire(task: ClaimedTask) -> tuple[Outcome, list[httpx.Request]]:
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, stream=httpx.ByteStream(b"ok"))

    async def run() -> Outcome:
        transport = httpx.MockTransport(answer)
        dispatcher = Dispatcher(
            transport.handle_async_request,
            timeout_s=5.0,
            policy=TargetPolicy(),
            keys=(),
            max_body_bytes=1024,
            db_clock=lambda: datetime(2026, 1, 1),
        )
        return await dispatcher.fire(task)

    return asyncio.run(run()), sent


def _task(**columns: object) -> ClaimedTask:
    values: dict[str, object] = {
        "id": 1,
        "url": "http://hooks.example/x",
        "due_at": datetime(2026, 1, 1),
        "attempt": 1,
        "max_attempts": 3,
    }
    values.update(columns)
    return ClaimedTask(**values)  # type: ignore[arg-type]


def test_deeply_nested_headers_fail_the_row_with_a_reason() -> None:
    outcome, sent = _fire(_task(headers=DEEP))

    assert outcome.klass is OutcomeClass.INVALID
    assert outcome.error == "headers is JSON nested too deeply (expected a flat object)"
    assert sent == []


def test_a_header_name_ending_in_a_newline_fails_the_row_once_not_as_a_connection_error() -> None:
    outcome, sent = _fire(_task(headers=json.dumps({"X-A\n": "1"})))

    assert outcome.klass is OutcomeClass.INVALID
    assert outcome.error == "header name 'X-A\\n' is not a valid HTTP header name"
    assert sent == []


def test_any_error_while_building_fails_the_row_alone() -> None:
    # A zero DATETIME reads back as None: the default body cannot render it.
    outcome, sent = _fire(_task(due_at=None))

    assert outcome.klass is OutcomeClass.INVALID
    assert outcome.error is not None
    assert outcome.error.startswith("cannot build the request: AttributeError: ")
    assert sent == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://h/x", "http://h/x"),
        ("http://h/x?token=abc", f"http://h/x?{REDACTED}"),
        ("https://alice:pw@h:8443/x", f"https://h:8443/x?{REDACTED}"),
        ("http://h/x#frag", f"http://h/x?{REDACTED}"),
        ("http://[::1/x?t=1", f"http://{REDACTED}"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    "text",
    [
        "bad response, url='http://h/x?token=s3cr3tTOKEN'",
        "request to h/x?token=s3cr3tTOKEN%2Fx failed",
        "token s3cr3tTOKEN%2Fx was refused",
        "token s3cr3tTOKEN/x was refused",
        "cannot reach http://alice:hunter22@h/x",
        "hunter22",
    ],
)
def test_scrub_removes_the_task_urls_secrets(text: str) -> None:
    url = "http://alice:hunter22@h/x?token=s3cr3tTOKEN%2Fx"

    scrubbed = scrub(text, url)

    assert "s3cr3tTOKEN" not in scrubbed
    assert "hunter22" not in scrubbed
    assert REDACTED in scrubbed


def test_scrub_leaves_a_plain_message_alone() -> None:
    assert scrub("connection refused", "http://h/x?a=1") == "connection refused"
