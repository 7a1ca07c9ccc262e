"""The dashboard's pages under ``/ui``, and ``/`` sending a browser there.

Reads go through the dashboard's repositories (``db/stats.py``,
``db/browse.py``); the two writes, cancel and reschedule, through the api's
``TimerStore``. Every page needs a session cookie from the login form, and
every form that changes something carries a CSRF token tied to it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ParamSpec
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from timer_controller.api.ui.auth import SessionGate
from timer_controller.api.ui.figures import figures
from timer_controller.api.ui.render import Renderer, secured
from timer_controller.api.ui.session import Session
from timer_controller.api.ui.views import detail_fields, history
from timer_controller.api.ui.writes import FormError, Result, StoreWrites, parse_due
from timer_controller.db.browse import MAX_PAGE, TimerBrowser, TimerFilter
from timer_controller.db.stats import StatsRepository
from timer_controller.db.stats_statements import FINISHED_VALUES, LIVE_VALUES
from timer_controller.db.timers import TimerStore
from timer_controller.domain.task import Status
from timer_controller.errors import StorageUnavailable

log = logging.getLogger(__name__)

REFRESH_S = 5
PAGE_SIZES = (25, 50, 100, 250)
NOTICES = {
    "cancelled": "Cancelled: this timer will not fire.",
    "rescheduled": "Rescheduled.",
    "not-waiting": "Nothing changed: the timer is no longer waiting.",
}
FormText = Annotated[str, Form()]
P = ParamSpec("P")
#: Seconds a client is asked to wait when the database is unreachable.
RETRY_AFTER_S = 5


@dataclass(frozen=True, slots=True)
class Wiring:
    """What the dashboard needs from the api: its store, token check, rules and clock."""

    tokens: Sequence[str]
    accepts: Callable[[str], bool]
    stats: StatsRepository
    browser: TimerBrowser
    store: TimerStore
    max_horizon_s: float
    default_max_attempts: int
    clock: Callable[[], datetime]


def _see(url: str) -> Response:
    return secured(RedirectResponse(url, status_code=303))


def _int_or_none(raw: str | None) -> int | None:
    raw = (raw or "").strip().lstrip("#")
    return int(raw) if raw.isdigit() and len(raw) <= 18 else None


def _links(where: TimerFilter, limit: int, next_after: int | None) -> dict[str, Any]:
    """The filter form's values and the pager's URLs, keeping the filter."""
    query = {
        "status": where.status or "",
        "id": where.timer_id or "",
        "idempotency_key": where.idempotency_key or "",
        "url_prefix": where.url_prefix or "",
        "limit": limit,
    }
    kept = {k: v for k, v in query.items() if v != ""}
    next_url = None
    if next_after is not None:
        next_url = f"/ui/timers?{urlencode({**kept, 'after': next_after})}"
    return {"filters": query, "next_url": next_url, "first_url": f"/ui/timers?{urlencode(kept)}"}


class Dashboard:
    def __init__(self, wiring: Wiring) -> None:
        self.render = Renderer()
        self.gate = SessionGate(wiring.tokens, wiring.accepts, self.render)
        self._wiring = wiring
        self._stats = wiring.stats
        self._browser = wiring.browser
        self._store = wiring.store
        self._writes = StoreWrites(wiring.store)

    def _answering(self, handler: Callable[P, Response]) -> Callable[P, Response]:
        """A page that says the database is unreachable (503), instead of failing."""

        @functools.wraps(handler)
        def run(*args: P.args, **kwargs: P.kwargs) -> Response:
            try:
                return handler(*args, **kwargs)
            except StorageUnavailable as exc:
                log.warning("dashboard: database unavailable: %s", exc)
                context = {
                    "title": "The database is unreachable",
                    "problem": f"{exc}. Try again in a few seconds.",
                }
                response = self.render.html("error.html", context, status_code=503)
                response.headers["Retry-After"] = str(RETRY_AFTER_S)
                return response

        return run

    def _page(
        self, session: Session, template: str, *, status_code: int = 200, **context: Any
    ) -> Response:
        context = {"csrf_token": self.gate.csrf(session), **context}
        return self.render.html(template, context, status_code=status_code)

    # -- pages -------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        session = self.gate.session(request)
        if session is None:
            return self.gate.to_login(request)
        return self._page(session, "overview.html", **self._overview_context(), title="Overview")

    def overview_panel(self, request: Request) -> Response:
        if self.gate.session(request) is None:
            return secured(Response("log in again", status_code=401, media_type="text/plain"))
        return self.render.html("overview_panel.html", self._overview_context())

    def _overview_context(self) -> dict[str, Any]:
        overview = self._stats.overview()
        return {
            "o": overview,
            "f": figures(overview),
            "live_statuses": LIVE_VALUES,
            "finished_statuses": FINISHED_VALUES,
            "refresh_s": REFRESH_S,
            "section": "overview",
        }

    def timers(
        self,
        request: Request,
        status: str | None = None,
        id: str | None = None,  # the query parameter's public name
        idempotency_key: str | None = None,
        url_prefix: str | None = None,
        after: str | None = None,
        limit: str | None = None,
    ) -> Response:
        session = self.gate.session(request)
        if session is None:
            return self.gate.to_login(request)
        where = TimerFilter(
            status=status if status in set(Status) else None,
            timer_id=_int_or_none(id),
            idempotency_key=idempotency_key or None,
            url_prefix=url_prefix or None,
        )
        size = min(max(_int_or_none(limit) or PAGE_SIZES[1], 1), MAX_PAGE)
        after_id = _int_or_none(after)
        found = self._browser.page(where, after_id=after_id, limit=size)
        links = _links(where, size, found.next_after_id)
        return self._page(
            session,
            "timers.html",
            title="Timers",
            section="timers",
            timers=found.timers,
            statuses=[s.value for s in Status],
            page_sizes=sorted({*PAGE_SIZES, size}),
            after=after_id,
            **links,
        )

    def timer(self, request: Request, timer_id: int, notice: str | None = None) -> Response:
        session = self.gate.session(request)
        if session is None:
            return self.gate.to_login(request)
        return self._detail(session, timer_id, notice=NOTICES.get(notice or ""))

    def _detail(
        self, session: Session, timer_id: int, *, problem: str | None = None, **context: Any
    ) -> Response:
        found = self._store.get(timer_id=timer_id)
        if found is None:
            return self._page(session, "error.html", title=f"No timer #{timer_id}", status_code=404)
        claim = self._browser.claim(timer_id)
        return self._page(
            session,
            "timer.html",
            title=f"Timer #{timer_id}",
            section="timers",
            t=found,
            fields=detail_fields(
                found, claim, default_max_attempts=self._wiring.default_max_attempts
            ),
            history=history(found, claim),
            problem=problem,
            status_code=422 if problem else 200,
            **context,
        )

    def failures(self, request: Request) -> Response:
        session = self.gate.session(request)
        if session is None:
            return self.gate.to_login(request)
        return self._page(
            session,
            "failures.html",
            title="Recent failures",
            section="failures",
            failures=self._stats.recent_failures(limit=100),
        )

    # -- the two writes ----------------------------------------------------

    def cancel(self, request: Request, timer_id: int, csrf_token: FormText = "") -> Response:
        session = self.gate.checked_session(request, csrf_token)
        if not isinstance(session, Session):
            return session
        result = self._writes.cancel(timer_id)
        log.info("dashboard: cancel of timer %d: %s", timer_id, result.value)
        return self._after_write(timer_id, result, "cancelled")

    def reschedule(
        self,
        request: Request,
        timer_id: int,
        csrf_token: FormText = "",
        delay: FormText = "",
        at: FormText = "",
    ) -> Response:
        session = self.gate.checked_session(request, csrf_token)
        if not isinstance(session, Session):
            return session
        try:
            due = parse_due(
                delay, at, now=self._wiring.clock(), max_horizon_s=self._wiring.max_horizon_s
            )
        except FormError as exc:
            return self._detail(session, timer_id, problem=str(exc))
        result = self._writes.reschedule(timer_id, due)
        log.info("dashboard: reschedule of timer %d: %s", timer_id, result.value)
        return self._after_write(timer_id, result, "rescheduled")

    def _after_write(self, timer_id: int, result: Result, done: str) -> Response:
        # Post/redirect/get: reloading the page afterwards repeats nothing.
        notice = {Result.DONE: done, Result.CONFLICT: "not-waiting"}.get(result)
        if notice is None:
            return _see("/ui/timers")
        return _see(f"/ui/timers/{timer_id}?notice={notice}")

    def router(self) -> APIRouter:
        router = APIRouter(include_in_schema=False)
        pages: list[tuple[str, Callable[..., Response], str]] = [
            ("/ui", self.overview, "GET"),
            ("/ui/overview/panel", self.overview_panel, "GET"),
            ("/ui/timers", self.timers, "GET"),
            ("/ui/timers/{timer_id}", self.timer, "GET"),
            ("/ui/timers/{timer_id}/cancel", self.cancel, "POST"),
            ("/ui/timers/{timer_id}/reschedule", self.reschedule, "POST"),
            ("/ui/failures", self.failures, "GET"),
        ]
        for path, handler, method in pages:
            router.add_api_route(path, self._answering(handler), methods=[method])
        router.add_api_route("/", lambda: _see("/ui"), methods=["GET"])
        router.add_api_route("/ui/static/{name}", self.render.asset, methods=["GET"])
        self.gate.add_routes(router)
        return router
