"""The api's ASGI application, built from its dependencies (nothing connects here).

``create_app`` takes the store, the tokens, the validation rules and a
clock, so tests and other rooms build it with whatever they need. Routes:

* ``/v1/timers…``: the timer resource (``routes.py``), bearer token required;
  the creates' usual requests are answered in front of the routes (``fast_path.py``);
* ``/healthz``, ``/readyz``, ``/metrics``: no token, as the controller's;
* ``/docs`` (Swagger UI, its files served from here: no CDN) and ``/openapi.json``.

``/`` and ``/ui`` are left to the dashboard (``api/ui/``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from timer_controller import __version__
from timer_controller.api import problems
from timer_controller.api.auth import BearerAuth
from timer_controller.api.creating import Creates
from timer_controller.api.fast_path import FastCreates
from timer_controller.api.middleware import ApiMetrics, BodyLimitMiddleware, MetricsMiddleware
from timer_controller.api.routes import timer_router
from timer_controller.api.validation import TimerRules
from timer_controller.db.clock import utc_now
from timer_controller.db.timers import TimerStore

DESCRIPTION = """Schedule one-shot HTTP timers: *call this URL at that time*.

Every `/v1` request needs `Authorization: Bearer <token>` with one of the
tokens in `API_TOKENS`. Errors are `application/problem+json` (RFC 9457).
"""


def create_app(
    *,
    store: TimerStore,
    tokens: Sequence[str],
    rules: TimerRules | None = None,
    clock: Callable[[], datetime] = utc_now,
    ready: Callable[[], bool] | None = None,
) -> FastAPI:
    """The api. ``clock`` gives naive UTC; ``ready`` (blocking) answers /readyz."""
    rules = rules or TimerRules()
    auth = BearerAuth(tokens)
    metrics = ApiMetrics()
    app = FastAPIOffline(
        title="timer-controller",
        version=__version__,
        description=DESCRIPTION,
        redoc_url=None,
        static_url="/docs/assets",
        # Swagger UI would otherwise fetch a validity badge from validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
        # Nothing here sets up OpenTelemetry; asking its global providers on every
        # request whether it has been was a fifth of a single create's event-loop time.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    # For routes other rooms add (the dashboard): the same store, token check and rules.
    app.state.store = store
    app.state.auth = auth
    app.state.rules = rules
    app.state.clock = clock
    app.state.metrics = metrics
    problems.install(app)
    creates = Creates(store=store, rules=rules, clock=clock)
    timers = timer_router(store=store, creates=creates, auth=auth, rules=rules, clock=clock)
    app.include_router(timers)
    _add_operations(app, metrics, ready or _pings(store))
    app.add_middleware(FastCreates, creates=creates, auth=auth, routes=timers.routes)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _pings(store: TimerStore) -> Callable[[], bool]:
    def ready() -> bool:
        store.ping()
        return True

    return ready


def _add_operations(app: FastAPI, metrics: ApiMetrics, ready: Callable[[], bool]) -> None:
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> PlainTextResponse:
        # The event loop answered: the process serves.
        return PlainTextResponse("ok\n")

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> PlainTextResponse:
        try:
            ok = await run_in_threadpool(ready)
        except Exception:  # a probe answers, it does not crash
            ok = False
        return PlainTextResponse("ready\n" if ok else "not ready\n", status_code=200 if ok else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_page() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with every error answer as application/problem+json."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                for code, answer in operation.get("responses", {}).items():
                    content = answer.get("content", {})
                    if code[:1] in "45" and "application/json" in content:
                        content[problems.PROBLEM_JSON] = content.pop("application/json")
        app.openapi_schema = schema
    return app.openapi_schema
