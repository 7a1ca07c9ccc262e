"""Turning a task row into the request: defaults, per-task fields, every bad field, signatures."""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace
from datetime import datetime
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from timer_controller import __version__
from timer_controller.delivery.policy import TargetPolicy
from timer_controller.delivery.request import (
    InvalidTask,
    WebhookRequest,
    build_request,
    default_body,
    parse_headers,
)
from timer_controller.delivery.signing import decode_secret
from timer_controller.domain.task import ClaimedTask

URL = "https://hooks.example.com/fire?x=1"
DUE_AT = datetime(2025, 6, 1, 12, 0, 0, 123456)
TIMESTAMP = 1_750_000_000
MAX_BODY = 1024
SECRET_A = "whsec_" + base64.b64encode(bytes(range(32))).decode()
SECRET_B = "whsec_" + base64.b64encode(bytes(range(100, 124))).decode()
SECRET_OTHER = "whsec_" + base64.b64encode(b"\x07" * 32).decode()
TASK = ClaimedTask(id=42, url=URL, due_at=DUE_AT, attempt=1, max_attempts=None)


def _build(
    task: ClaimedTask = TASK,
    *,
    keys: tuple[bytes, ...] = (),
    timestamp: int = TIMESTAMP,
    max_body_bytes: int = MAX_BODY,
    policy: TargetPolicy | None = None,
) -> WebhookRequest:
    return build_request(
        task,
        policy=policy or TargetPolicy(),
        keys=keys,
        timestamp=timestamp,
        max_body_bytes=max_body_bytes,
    )


def _signed(task: ClaimedTask, *secrets: str) -> WebhookRequest:
    # standardwebhooks refuses timestamps more than 5 minutes from its own clock.
    return _build(task, keys=tuple(decode_secret(s) for s in secrets), timestamp=int(time.time()))


def test_default_request_is_a_json_post_with_standard_webhook_headers() -> None:
    request = _build()

    assert request.method == "POST"
    assert request.url == URL
    assert request.body == b'{"id":42,"due_at":"2025-06-01T12:00:00.123456Z"}'
    assert json.loads(request.body) == {"id": 42, "due_at": "2025-06-01T12:00:00.123456Z"}
    assert request.headers == {
        "webhook-id": "42",
        "webhook-timestamp": str(TIMESTAMP),
        "user-agent": f"timer-controller/{__version__}",
        "content-type": "application/json",
    }


def test_default_body_keeps_microseconds_when_they_are_zero() -> None:
    request = _build(replace(TASK, due_at=datetime(2025, 6, 1, 12, 0, 0)))

    assert json.loads(request.body)["due_at"] == "2025-06-01T12:00:00.000000Z"


def test_webhook_id_is_the_task_id_on_every_attempt() -> None:
    first = _build(replace(TASK, attempt=1), timestamp=TIMESTAMP)
    third = _build(replace(TASK, attempt=3), timestamp=TIMESTAMP + 60)

    assert first.headers["webhook-id"] == third.headers["webhook-id"] == "42"
    assert third.headers["webhook-timestamp"] == str(TIMESTAMP + 60)


@pytest.mark.parametrize(
    ("method", "headers", "body", "expected_method", "expected_body", "expected_headers"),
    [
        (
            "PUT",
            '{"X-Token": "abc", "Authorization": "Bearer t"}',
            '{"a": 1}',
            "PUT",
            b'{"a": 1}',
            {"X-Token": "abc", "Authorization": "Bearer t", "content-type": "application/json"},
        ),
        ("patch", None, "plain text", "PATCH", b"plain text", {"content-type": "application/json"}),
        (" post ", None, "x", "POST", b"x", {"content-type": "application/json"}),
        ("GET", None, None, "GET", b"", {}),
        ("get", '{"Accept": "text/plain"}', None, "GET", b"", {"Accept": "text/plain"}),
        ("DELETE", None, None, "DELETE", b"", {}),
        (
            "POST",
            '{"Content-Type": "text/plain"}',
            "hi",
            "POST",
            b"hi",
            {"Content-Type": "text/plain"},
        ),
        ("POST", None, "", "POST", b"", {}),
        ("POST", None, "héllo", "POST", "héllo".encode(), {"content-type": "application/json"}),
        (None, "", None, "POST", None, {"content-type": "application/json"}),
        ("", "  ", None, "POST", None, {"content-type": "application/json"}),
        ("PUT", "{}", None, "PUT", None, {"content-type": "application/json"}),
    ],
)
def test_per_task_method_headers_and_body(
    method: str | None,
    headers: str | None,
    body: str | None,
    expected_method: str,
    expected_body: bytes | None,
    expected_headers: dict[str, str],
) -> None:
    task = replace(TASK, method=method, headers=headers, body=body)

    request = _build(task)

    assert request.method == expected_method
    # None: the default JSON body.
    default = b'{"id":42,"due_at":"2025-06-01T12:00:00.123456Z"}'
    assert request.body == (default if expected_body is None else expected_body)
    controller_owned = {"webhook-id", "webhook-timestamp", "user-agent"}
    assert {k: v for k, v in request.headers.items() if k not in controller_owned} == (
        expected_headers
    )
    assert request.headers["webhook-id"] == "42"
    assert request.headers["user-agent"] == f"timer-controller/{__version__}"


def test_a_valid_request_can_be_built_by_httpx() -> None:
    task = replace(TASK, method="PUT", headers='{"X-A": "1\\t2"}', body="payload")
    request = _build(task)

    built = httpx.Request(
        request.method, request.url, headers=request.headers, content=request.body
    )

    assert built.headers["x-a"] == "1\t2"
    assert built.headers["webhook-id"] == "42"
    assert built.content == b"payload"


BAD_ROWS: list[tuple[dict[str, Any], str]] = [
    ({"url": ""}, "empty URL"),
    ({"url": "   "}, "empty URL"),
    ({"url": "ftp://files.example.com/x"}, "unsupported scheme 'ftp' (only http and https)"),
    ({"url": "file:///etc/passwd"}, "unsupported scheme 'file' (only http and https)"),
    ({"url": "http://"}, "malformed URL: no host"),
    ({"url": "http:///path"}, "malformed URL: no host"),
    ({"url": "example.com/hook"}, "malformed URL: no scheme"),
    ({"url": "http://example.com/" + "a" * 5000}, "URL longer than 2048 characters"),
    ({"method": "TRACE"}, "method 'TRACE' is not allowed (use DELETE, GET, PATCH, POST, PUT)"),
    ({"method": "CONNECT"}, "method 'CONNECT' is not allowed (use DELETE, GET, PATCH, POST, PUT)"),
    ({"method": "OPTIONS"}, "method 'OPTIONS' is not allowed (use DELETE, GET, PATCH, POST, PUT)"),
    ({"method": "  "}, "method '  ' is not allowed (use DELETE, GET, PATCH, POST, PUT)"),
    ({"method": "PO ST"}, "method 'PO ST' is not allowed (use DELETE, GET, PATCH, POST, PUT)"),
    (
        {"headers": "{not json"},
        "headers is not valid JSON (Expecting property name enclosed in double quotes at char 1)",
    ),
    ({"headers": '{"X-A": "1"'}, "headers is not valid JSON (Expecting ',' delimiter at char 11)"),
    ({"headers": '["X-A", "1"]'}, "headers must be a JSON object of string to string"),
    ({"headers": '"X-A: 1"'}, "headers must be a JSON object of string to string"),
    ({"headers": "42"}, "headers must be a JSON object of string to string"),
    ({"headers": "null"}, "headers must be a JSON object of string to string"),
    ({"headers": '{"X-A": 1}'}, "header 'X-A' must have a string value"),
    ({"headers": '{"X-A": null}'}, "header 'X-A' must have a string value"),
    ({"headers": '{"X-A": ["1"]}'}, "header 'X-A' must have a string value"),
    ({"headers": '{"X-A": {"b": "c"}}'}, "header 'X-A' must have a string value"),
    (
        {"headers": '{"X-A\\nInjected": "1"}'},
        "header name 'X-A\\nInjected' is not a valid HTTP header name",
    ),
    ({"headers": '{"X-A\\r\\n": "1"}'}, "header name 'X-A\\r\\n' is not a valid HTTP header name"),
    ({"headers": '{"X A": "1"}'}, "header name 'X A' is not a valid HTTP header name"),
    ({"headers": '{"X-A:": "1"}'}, "header name 'X-A:' is not a valid HTTP header name"),
    ({"headers": '{"": "1"}'}, "header name '' is not a valid HTTP header name"),
    ({"headers": '{"Ünicode": "1"}'}, "header name 'Ünicode' is not a valid HTTP header name"),
    (
        {"headers": '{"X-A": "1\\r\\nInjected: 2"}'},
        "header 'X-A' has a line break or NUL in its value",
    ),
    (
        {"headers": '{"X-A": "1\\nInjected: 2"}'},
        "header 'X-A' has a line break or NUL in its value",
    ),
    ({"headers": '{"X-A": "1\\r"}'}, "header 'X-A' has a line break or NUL in its value"),
    ({"headers": '{"X-A": "1\\u0000"}'}, "header 'X-A' has a line break or NUL in its value"),
    *[
        (
            {"headers": json.dumps({name: "spoofed"})},
            f"header {name!r} is set by the controller and cannot be overridden",
        )
        for name in (
            "webhook-id",
            "Webhook-Id",
            "webhook-timestamp",
            "WEBHOOK-SIGNATURE",
            "user-agent",
            "User-Agent",
            "host",
            "Host",
            "content-length",
            "Content-Length",
            "transfer-encoding",
            "Connection",
        )
    ],
    ({"method": "GET", "body": "{}"}, "a GET request cannot carry a body"),
    ({"method": "get", "body": ""}, "a GET request cannot carry a body"),
    ({"method": "DELETE", "body": "x"}, "a DELETE request cannot carry a body"),
    (
        {"body": "x" * (MAX_BODY + 1)},
        f"body is {MAX_BODY + 1} bytes, more than MAX_REQUEST_BODY ({MAX_BODY})",
    ),
    # The limit counts encoded bytes, not characters.
    ({"body": "é" * 513}, f"body is 1026 bytes, more than MAX_REQUEST_BODY ({MAX_BODY})"),
    (
        {"method": "PUT", "body": "x" * 10 * 1024 * 1024},
        f"body is {10 * 1024 * 1024} bytes, more than MAX_REQUEST_BODY ({MAX_BODY})",
    ),
]


@pytest.mark.parametrize(
    ("fields", "reason"),
    BAD_ROWS,
    ids=[f"{i}-{next(iter(f))}" for i, (f, _) in enumerate(BAD_ROWS)],
)
def test_every_bad_field_gives_a_specific_reason(fields: dict[str, Any], reason: str) -> None:
    task = replace(TASK, **fields)

    with pytest.raises(InvalidTask) as caught:
        _build(task)

    assert str(caught.value) == reason


@pytest.mark.parametrize(
    ("url", "policy", "reason"),
    [
        (
            "http://127.0.0.1:8080/",
            TargetPolicy(block_private_networks=True),
            "blocked destination",
        ),
        (
            "http://10.1.2.3/",
            TargetPolicy(allowed_hosts=("192.168.0.0/16",)),
            "host not in ALLOWED_HOSTS",
        ),
        (
            "http://other.example.com/",
            TargetPolicy(allowed_hosts=("api.example.com",)),
            "host not in ALLOWED_HOSTS",
        ),
    ],
)
def test_the_target_policy_is_applied(url: str, policy: TargetPolicy, reason: str) -> None:
    with pytest.raises(InvalidTask) as caught:
        _build(replace(TASK, url=url), policy=policy)

    assert str(caught.value) == reason


def test_a_body_of_exactly_the_maximum_is_sent() -> None:
    request = _build(replace(TASK, body="x" * MAX_BODY))

    assert len(request.body) == MAX_BODY


@pytest.mark.parametrize("value", ["café", "naïve", "日本", "a\u2028b"])
def test_header_values_httpx_cannot_send_are_invalid(value: str) -> None:
    task = replace(TASK, headers=json.dumps({"X-Name": value}))

    with pytest.raises(InvalidTask, match="X-Name"):
        _build(task)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, {}),
        ("", {}),
        ("   ", {}),
        ("{}", {}),
        (
            '{"X-A": "1", "x-b": "two words", "Accept": ""}',
            {"X-A": "1", "x-b": "two words", "Accept": ""},
        ),
        ('{"Content-Type": "text/plain"}', {"Content-Type": "text/plain"}),
        ('{"X-Tab": "a\\tb"}', {"X-Tab": "a\tb"}),
        ('{"X_Under.score~!#$%&\'*+^`|": "v"}', {"X_Under.score~!#$%&'*+^`|": "v"}),
    ],
)
def test_parse_headers_accepts(raw: str | None, expected: dict[str, str]) -> None:
    assert parse_headers(raw) == expected


# --- signatures, checked by the independent standardwebhooks package --------------------


def test_no_signature_header_without_keys() -> None:
    assert "webhook-signature" not in _build().headers


def test_one_secret_signs_verifiably() -> None:
    request = _signed(TASK, SECRET_A)

    signature = request.headers["webhook-signature"]
    assert signature.startswith("v1,")
    assert " " not in signature
    payload = Webhook(SECRET_A).verify(request.body, request.headers)
    assert payload == {"id": 42, "due_at": "2025-06-01T12:00:00.123456Z"}


@pytest.mark.parametrize("secret", [SECRET_A, SECRET_B])
def test_with_two_secrets_each_secret_alone_verifies(secret: str) -> None:
    request = _signed(TASK, SECRET_A, SECRET_B)

    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert Webhook(secret).verify(request.body, request.headers)["id"] == 42


def test_a_secret_not_configured_does_not_verify() -> None:
    request = _signed(TASK, SECRET_A, SECRET_B)

    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(SECRET_OTHER).verify(request.body, request.headers)


@pytest.mark.parametrize(
    ("field", "tampered"),
    [("body", b'{"id":43,"due_at":"2025-06-01T12:00:00.123456Z"}'), ("webhook-id", "43")],
)
def test_a_tampered_request_does_not_verify(field: str, tampered: Any) -> None:
    request = _signed(TASK, SECRET_A)
    body, headers = request.body, dict(request.headers)
    if field == "body":
        body = tampered
    else:
        headers[field] = tampered

    with pytest.raises(WebhookVerificationError, match="No matching signature"):
        Webhook(SECRET_A).verify(body, headers)


@pytest.mark.parametrize(
    ("method", "body"),
    [("PUT", "custom ünïcode body"), ("PATCH", ""), ("GET", None), ("DELETE", None)],
)
def test_signatures_cover_per_task_bodies(method: str, body: str | None) -> None:
    request = _signed(replace(TASK, method=method, body=body, headers='{"X-A": "1"}'), SECRET_A)

    Webhook(SECRET_A).verify(request.body, request.headers, json_parse=False)
    assert request.body == (body or "").encode()


@pytest.mark.parametrize("task_id", [1, 42, 2**31 - 1, 2**63 - 1])
@pytest.mark.parametrize(
    "due_at",
    [
        datetime(2025, 6, 1, 12, 0, 0),
        datetime(2025, 6, 1, 12, 0, 0, 1),
        datetime(2025, 12, 31, 23, 59, 59, 999999),
        datetime(1, 1, 1),
        datetime(9999, 12, 31, 23, 59, 59, 500000),
    ],
)
def test_default_body_is_what_compact_json_dumps_writes(task_id: int, due_at: datetime) -> None:
    due = due_at.isoformat(timespec="microseconds") + "Z"
    expected = json.dumps({"id": task_id, "due_at": due}, separators=(",", ":")).encode()

    assert default_body(replace(TASK, id=task_id, due_at=due_at)) == expected
