"""Turning a claimed task row into the HTTP request to send (pure).

A row is written by other systems, so every field is checked here and a
bad one becomes a specific reason instead of an exception.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

from timer_controller import __version__
from timer_controller.delivery.policy import TargetPolicy, check_url
from timer_controller.delivery.signing import sign
from timer_controller.domain.task import ClaimedTask

USER_AGENT = f"timer-controller/{__version__}"
METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
ALLOWED_METHODS = METHODS_WITH_BODY | {"GET", "DELETE"}
# Headers the controller owns; a row may not override them.
RESERVED_HEADERS = frozenset(
    {
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "user-agent",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 field-name, fullmatch only
_BAD_VALUE_CHARS = re.compile(r"[\r\n\x00]")
_CONTROL_CHARS = re.compile(r"[\x01-\x08\x0b-\x1f\x7f]")  # RFC 9110 allows HTAB only
# Tasks share a few endpoints and the check is pure, so answers are kept: it
# cost about 19 us a timer, a twentieth of the pod's CPU per timer
# (docs/benchmarks.md). Resolved addresses are checked again at connect time.
_checked_url = functools.lru_cache(maxsize=4096)(check_url)


class InvalidTask(ValueError):
    """The row cannot be turned into a request; the message is the reason."""


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes


def default_body(task: ClaimedTask) -> bytes:
    """``{"id":…,"due_at":"…Z"}``, as compact ``json.dumps`` writes it.

    Formatted directly: an int and an ISO time need no JSON escaping, and
    ``json.dumps`` of the dict took about 4 us of each timer (isoformat with
    ``timespec`` another 1 us more than without).
    """
    due = task.due_at.isoformat()
    if not task.due_at.microsecond:
        due += ".000000"
    return f'{{"id":{task.id:d},"due_at":"{due}Z"}}'.encode()


def parse_headers(raw: str | None) -> dict[str, str]:
    if raw is None or not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InvalidTask(f"headers is not valid JSON ({exc.msg} at char {exc.pos})") from None
    except RecursionError:
        raise InvalidTask("headers is JSON nested too deeply (expected a flat object)") from None
    if not isinstance(parsed, dict):
        raise InvalidTask("headers must be a JSON object of string to string")
    headers: dict[str, str] = {}
    for name, value in parsed.items():
        if not isinstance(value, str):
            raise InvalidTask(f"header {name!r} must have a string value")
        # fullmatch: with match, "$" also matches before a final newline.
        if not _TOKEN.fullmatch(name):
            raise InvalidTask(f"header name {name!r} is not a valid HTTP header name")
        if _BAD_VALUE_CHARS.search(value):
            raise InvalidTask(f"header {name!r} has a line break or NUL in its value")
        if not value.isascii():
            raise InvalidTask(f"header {name!r} must be ASCII (encode other text first)")
        if _CONTROL_CHARS.search(value):
            raise InvalidTask(f"header {name!r} has a control character in its value")
        if name.lower() in RESERVED_HEADERS:
            raise InvalidTask(f"header {name!r} is set by the controller and cannot be overridden")
        headers[name] = value
    return headers


def check_method(raw: str | None) -> str:
    """The method to send for a row's ``method`` (POST when unset); raises InvalidTask."""
    method = (raw or "POST").strip().upper()
    if method not in ALLOWED_METHODS:
        raise InvalidTask(
            f"method {raw!r} is not allowed (use {', '.join(sorted(ALLOWED_METHODS))})"
        )
    return method


def check_body(raw: str | None, *, method: str, max_body_bytes: int) -> bytes | None:
    """A row's ``body`` as sent (None when unset); raises InvalidTask."""
    if raw is None:
        return None
    if method not in METHODS_WITH_BODY:
        raise InvalidTask(f"a {method} request cannot carry a body")
    body = raw.encode()
    if len(body) > max_body_bytes:
        raise InvalidTask(
            f"body is {len(body)} bytes, more than MAX_REQUEST_BODY ({max_body_bytes})"
        )
    return body


def build_request(
    task: ClaimedTask,
    *,
    policy: TargetPolicy,
    keys: tuple[bytes, ...],
    timestamp: int,
    max_body_bytes: int,
) -> WebhookRequest:
    """The request for ``task``; raises InvalidTask with a specific reason."""
    reason = _checked_url(task.url, policy)
    if reason is not None:
        raise InvalidTask(reason)
    method = check_method(task.method)
    headers = parse_headers(task.headers)
    body = check_body(task.body, method=method, max_body_bytes=max_body_bytes)
    if body is None:
        body = default_body(task) if method in METHODS_WITH_BODY else b""
    msg_id = str(task.id)
    headers.update(
        {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "user-agent": USER_AGENT}
    )
    if body and not any(name.lower() == "content-type" for name in headers):
        headers["content-type"] = "application/json"
    if keys:
        headers["webhook-signature"] = sign(keys, msg_id=msg_id, timestamp=timestamp, body=body)
    return WebhookRequest(method=method, url=task.url, headers=headers, body=body)
