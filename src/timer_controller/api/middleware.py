"""ASGI middleware: request metrics by route and status, and the request size limit."""

from __future__ import annotations

import time

from fastapi import HTTPException
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from timer_controller.api.problems import problem_response

#: A batch of 1000 timers of a few hundred bytes each fits many times over;
#: a larger body is refused before it is read.
MAX_REQUEST_BYTES = 16 * 1024 * 1024
_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: The route label of a request that matched no route (a 404): never the raw path,
#: which would make one time series per URL anybody tries.
UNMATCHED = "<unmatched>"


class ApiMetrics:
    """The api's metrics, in a registry of their own (tests build several apps)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "timer_api_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "timer_api_request_duration_seconds",
            "Time to answer a request, by route template and method",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            # FastAPI puts the matched route in the (shared) scope while routing.
            route = getattr(scope.get("route"), "path", UNMATCHED)
            method = str(scope.get("method", ""))
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)


class BodyLimitMiddleware:
    """Refuse a request body over ``max_bytes`` with a 413 problem.

    A declared Content-Length is judged before anything is read; a chunked
    body is counted as it arrives, and the route's read of it fails with 413.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_REQUEST_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _detail(self) -> str:
        return f"the request body is larger than {self.max_bytes} bytes; send less at a time"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await problem_response(413, self._detail())(scope, receive, send)
            return
        seen = 0

        async def receiving() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # FastAPI lets an HTTPException from reading the body through as it is.
                    raise HTTPException(413, self._detail())
            return message

        await self.app(scope, receiving, send)
