"""Sending one webhook and classifying how it ended.

Every outcome class is decided here, ``Retry-After`` included. The sender
is chosen once, by bootstrap: the guarded transport itself, which sends
straight through its aiohttp session (``Exchanger``), or (with
FOLLOW_REDIRECTS) a RedirectingSender over it, which follows redirects.
``transport.py`` speaks httpx's exception contract; only this module turns
those exceptions into outcomes.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol, runtime_checkable

import httpx

from timer_controller.delivery.policy import BlockedDestinationError, TargetPolicy
from timer_controller.delivery.redaction import scrub
from timer_controller.delivery.request import InvalidTask, build_request
from timer_controller.domain.task import ClaimedTask, Outcome, OutcomeClass

log = logging.getLogger(__name__)

# Read at most this much of a response: enough for an error message, and a
# receiver that streams forever cannot hold memory.
MAX_RESPONSE_BYTES = 64 * 1024


def classify_status(code: int) -> OutcomeClass:
    if 200 <= code < 300:
        return OutcomeClass.SUCCESS
    if code in (408, 429) or 500 <= code < 600:
        return OutcomeClass.RETRYABLE_STATUS
    return OutcomeClass.FINAL_STATUS


def describe_connect_error(exc: BaseException) -> str:
    """A short reason for a failed connection: refused, DNS, TLS, reset."""
    text = str(exc).lower()
    chain: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(chain) < 8:
        chain.append(cause)
        cause = cause.__cause__ or cause.__context__
    for link in chain:
        if (
            isinstance(link, ConnectionRefusedError)
            or getattr(link, "errno", None) == errno.ECONNREFUSED
        ):
            return "connection refused"
    if any(
        word in text
        for word in (
            "name or service not known",
            "nodename nor servname",
            "dns",
            "getaddrinfo",
            "name resolution",
            "no address associated",
        )
    ):
        return "DNS lookup failed"
    if "refused" in text:
        return "connection refused"
    if "ssl" in text or "certificate" in text:
        return f"TLS error: {str(exc)[:200]}"
    return f"connection failed: {str(exc)[:200] or type(exc).__name__}"


# httpx.URL is immutable and tasks share endpoints: parsing each URL once
# made building the request about three times cheaper (docs/benchmarks.md).
_parsed_url = functools.lru_cache(maxsize=4096)(httpx.URL)

#: Sends one request and returns the response with its body unread.
Send = Callable[[httpx.Request], Awaitable[httpx.Response]]


@runtime_checkable
class Exchanger(Protocol):
    """Sends one request without following redirects, with no httpx objects around it.

    Raises httpx's exceptions for the causes the httpx transport API would
    (``transport._mapped_errors``), and answers the status and the
    ``Retry-After`` header, having read at most ``read_limit`` bytes.
    """

    async def exchange(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout_s: float,
        read_limit: int,
    ) -> tuple[int, str | None]: ...


class Dispatcher:
    """Fires claimed tasks through one sender; never raises for a task's sake.

    Without redirect following the sender is the transport itself, an
    ``Exchanger``: the request goes straight through its aiohttp session,
    with none of the httpx client's per-request layers (URL and header
    merging, auth, cookies, redirects) and no ``httpx.Request`` or
    ``httpx.Response`` either (docs/http-transport.md). Any other ``Send``
    (httpx's transport API: a RedirectingSender with FOLLOW_REDIRECTS,
    which leaves every redirect's body unread, or a test's mock transport)
    gets an ``httpx.Request`` and answers an ``httpx.Response``.
    """

    def __init__(
        self,
        send: Send | Exchanger,
        *,
        timeout_s: float,
        policy: TargetPolicy,
        keys: tuple[bytes, ...],
        max_body_bytes: int,
        db_clock: Callable[[], datetime],
    ) -> None:
        self._exchanger = send if isinstance(send, Exchanger) else None
        self._send_request = send if not isinstance(send, Exchanger) else None
        self._extensions = {"timeout": httpx.Timeout(timeout_s).as_dict()}
        self._timeout_s = timeout_s
        self._policy = policy
        self._keys = keys
        self._max_body_bytes = max_body_bytes
        self._db_clock = db_clock

    async def fire(self, task: ClaimedTask) -> Outcome:
        """One attempt; never raises (except cancellation)."""
        try:
            request = build_request(
                task,
                policy=self._policy,
                keys=self._keys,
                timestamp=int(time.time()),
                max_body_bytes=self._max_body_bytes,
            )
        except InvalidTask as exc:
            # Nothing was sent, so no fired_at.
            return Outcome(task.id, OutcomeClass.INVALID, error=scrub(str(exc), task.url))
        except Exception as exc:  # e.g. RecursionError: a row fails alone, whatever it holds
            reason = scrub(f"cannot build the request: {type(exc).__name__}: {exc}", task.url)
            return Outcome(task.id, OutcomeClass.INVALID, error=reason[:300])
        fired_at = self._db_clock()
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                code, retry_after = await self._send(
                    request.method, request.url, request.headers, request.body
                )
        except BlockedDestinationError:
            # Refused before any connection: nothing was sent.
            return self._outcome(task, started, None, OutcomeClass.INVALID, "blocked destination")
        except (TimeoutError, httpx.TimeoutException):
            reason = f"timed out after {self._timeout_s:g}s"
            return self._outcome(task, started, fired_at, OutcomeClass.TIMEOUT, reason)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return self._outcome(
                task, started, fired_at, OutcomeClass.INVALID, f"malformed URL: {exc}"
            )
        except httpx.ConnectError as exc:
            return self._outcome(
                task, started, fired_at, OutcomeClass.CONNECT_ERROR, describe_connect_error(exc)
            )
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {str(exc)[:200] or 'connection closed'}"
            return self._outcome(task, started, fired_at, OutcomeClass.CONNECT_ERROR, reason)
        except Exception as exc:  # one bad task must never stop the loop
            trace = "".join(traceback.format_exception(exc))
            log.error(
                "task %d: unexpected error while sending: %s", task.id, scrub(trace, task.url)
            )
            reason = f"unexpected error: {type(exc).__name__}: {str(exc)[:200]}"
            return self._outcome(task, started, fired_at, OutcomeClass.CONNECT_ERROR, reason)
        klass = classify_status(code)
        error = None if klass is OutcomeClass.SUCCESS else f"HTTP {code}"
        return Outcome(
            task.id,
            klass,
            status_code=code,
            error=error,
            retry_after_s=parse_retry_after(retry_after, now=fired_at),
            fired_at=fired_at,
            duration_s=time.perf_counter() - started,
        )

    async def _send(
        self, method: str, url: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str | None]:
        if self._exchanger is not None:
            return await self._exchanger.exchange(
                method,
                url,
                headers,
                body,
                timeout_s=self._timeout_s,
                read_limit=MAX_RESPONSE_BYTES,
            )
        assert self._send_request is not None
        request = httpx.Request(
            method, _parsed_url(url), headers=headers, content=body, extensions=self._extensions
        )
        response = await self._send_request(request)
        try:
            received = 0
            async for chunk in response.aiter_raw():
                received += len(chunk)
                if received >= MAX_RESPONSE_BYTES:
                    break
            return response.status_code, response.headers.get("retry-after")
        finally:
            await response.aclose()

    @staticmethod
    def _outcome(
        task: ClaimedTask,
        started: float,
        fired_at: datetime | None,
        klass: OutcomeClass,
        error: str,
    ) -> Outcome:
        return Outcome(
            task.id,
            klass,
            error=scrub(error, task.url),
            fired_at=fired_at,
            duration_s=time.perf_counter() - started,
        )


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or HTTP date).

    ``now`` is naive UTC. Unparseable values are ignored (None), as RFC 9110 allows.
    """
    if value is None:
        return None
    value = value.strip()
    # isascii: str.isdigit() also accepts "²", which float() refuses.
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is not None:
            when = when.astimezone(UTC).replace(tzinfo=None)
        return max(0.0, (when - now).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
