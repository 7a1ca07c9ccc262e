"""Sending one webhook and classifying how it ended.

The service codes against httpx only; ``transport.py`` picks what is under it.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
import time
import traceback
from collections.abc import Callable
from datetime import datetime

import httpx

from timer_controller.delivery.policy import BlockedDestinationError, TargetPolicy
from timer_controller.delivery.redaction import scrub
from timer_controller.delivery.redirects import RedirectingSender
from timer_controller.delivery.request import InvalidTask, build_request
from timer_controller.domain.retry import parse_retry_after
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


# Tasks often share endpoints; httpx.URL is immutable, so parse each once.
_parsed_url = functools.lru_cache(maxsize=4096)(httpx.URL)


class Dispatcher:
    """Fires claimed tasks through one shared httpx client and its transport.

    Without redirect following, a request goes straight to the client's
    transport (``handle_async_request``, httpx's transport API): the
    client's per-request layers — URL and header merging, auth, cookies,
    redirects — do nothing the controller needs, and cost about a quarter of
    its CPU per webhook (docs/http-transport.md). With FOLLOW_REDIRECTS a
    RedirectingSender follows redirects over the same transport, leaving
    every redirect's body unread (redirects.py).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        transport: httpx.AsyncBaseTransport,
        follow_redirects: bool,
        timeout_s: float,
        policy: TargetPolicy,
        keys: tuple[bytes, ...],
        max_body_bytes: int,
        db_clock: Callable[[], datetime],
    ) -> None:
        self._client = client
        self._transport = transport
        self._follow_redirects = follow_redirects
        self._redirecting = RedirectingSender(transport, policy=policy)
        self._extensions = {"timeout": httpx.Timeout(timeout_s).as_dict()}
        self._timeout_s = timeout_s
        self._policy = policy
        self._keys = keys
        self._max_body_bytes = max_body_bytes
        self._db_clock = db_clock

    async def fire(self, task: ClaimedTask) -> Outcome:
        """One attempt; never raises (except cancellation)."""
        fired_at = self._db_clock()
        try:
            request = build_request(
                task,
                policy=self._policy,
                keys=self._keys,
                timestamp=int(time.time()),
                max_body_bytes=self._max_body_bytes,
            )
        except InvalidTask as exc:
            reason = scrub(str(exc), task.url)
            return Outcome(task.id, OutcomeClass.INVALID, error=reason, fired_at=fired_at)
        except Exception as exc:  # e.g. RecursionError: a row fails alone, whatever it holds
            reason = scrub(f"cannot build the request: {type(exc).__name__}: {exc}", task.url)
            return Outcome(task.id, OutcomeClass.INVALID, error=reason[:300], fired_at=fired_at)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout_s):
                code, retry_after = await self._send(
                    request.method, request.url, request.headers, request.body
                )
        except BlockedDestinationError:
            return self._outcome(
                task, started, fired_at, OutcomeClass.INVALID, "blocked destination"
            )
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
        request = httpx.Request(
            method, _parsed_url(url), headers=headers, content=body, extensions=self._extensions
        )
        if self._follow_redirects:
            response = await self._redirecting(request)
        else:
            response = await self._transport.handle_async_request(request)
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
        task: ClaimedTask, started: float, fired_at: datetime, klass: OutcomeClass, error: str
    ) -> Outcome:
        return Outcome(
            task.id,
            klass,
            error=scrub(error, task.url),
            fired_at=fired_at,
            duration_s=time.perf_counter() - started,
        )
