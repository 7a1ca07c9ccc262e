"""The ``/v1`` routes: create (one or a batch), get, list, reschedule, cancel.

Validation runs on the event loop (pure and quick); each store call, a
short blocking transaction, runs on the thread pool (``run_in_threadpool``),
one hop per request; single creates share theirs (``creating.py``). The
creates' usual requests take a shorter way in (``fast_path.py``); these
routes still describe them (OpenAPI) and answer everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from starlette.concurrency import run_in_threadpool

from timer_controller.api.auth import BearerAuth
from timer_controller.api.creating import Creates, invalid
from timer_controller.api.idempotency import BadKey, check_key, parse_key_header
from timer_controller.api.models import (
    DEFAULT_PAGE,
    MAX_PAGE,
    BatchIn,
    Reschedule,
    StatusName,
    TimerBatch,
    TimerList,
    TimerOut,
    TimerSpec,
)
from timer_controller.api.problems import ApiProblem, Problem, ProblemItem
from timer_controller.api.strict_query import known_query_only
from timer_controller.api.times import TimeError, resolve
from timer_controller.api.validation import TimerRules
from timer_controller.db.timers import TimerRecord, TimerStore, Transition

BIGINT_MAX = 2**63 - 1
TimerId = Annotated[int, Path(ge=1, le=BIGINT_MAX, description="the timer's id")]

_HEADER_DOCS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}, "description": "Bearer"}},
    503: {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}},
}
_DESCRIPTIONS = {
    400: "a body that cannot be read as JSON, or a malformed Idempotency-Key header",
    401: "no bearer token, or not one of API_TOKENS",
    404: "no such timer",
    409: "the timer is not waiting; timer_status says what it is",
    413: "the request body is too large",
    422: "the request is invalid (every problem is listed), or its idempotency key was "
    "used by a different request",
    503: "the database is unavailable; try again after Retry-After seconds",
}


# For clients and stateful testing: what a created timer's id leads to.
_TIMER_LINKS = {
    name: {"operationId": operation, "parameters": {"timer_id": "$response.body#/id"}}
    for name, operation in (
        ("GetTimer", "get_timer"),
        ("RescheduleTimer", "reschedule_timer"),
        ("CancelTimer", "cancel_timer"),
    )
}


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem answers a route may give (and those any may give)."""
    answers: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*codes, 400, 401, 413, 422, 503}):
        entry: dict[str, Any] = {"model": Problem, "description": _DESCRIPTIONS[code]}
        if code in _HEADER_DOCS:
            entry["headers"] = _HEADER_DOCS[code]
        answers[code] = entry
    return answers


def _key(header: str | None) -> str | None:
    if header is None:
        return None
    try:
        return parse_key_header(header)
    except BadKey as exc:
        raise ApiProblem(400, str(exc)) from None


def timer_router(
    *,
    store: TimerStore,
    creates: Creates,
    auth: BearerAuth,
    rules: TimerRules,
    clock: Callable[[], datetime],
) -> APIRouter:
    router = APIRouter(
        prefix="/v1", dependencies=[Depends(auth), Depends(known_query_only)], tags=["timers"]
    )

    def out(record: TimerRecord) -> TimerOut:
        return TimerOut.of(record, default_max_attempts=rules.default_max_attempts)

    def found(result: Transition, timer_id: int, verb: str) -> TimerOut:
        if result.timer is None:
            raise ApiProblem(404, f"there is no timer {timer_id}")
        if not result.applied:
            raise ApiProblem(
                409,
                f"timer {timer_id} is {result.timer.status}; only a waiting timer can be {verb}",
                timer_status=result.timer.status,
            )
        return out(result.timer)

    @router.post(
        "/timers",
        status_code=201,
        operation_id="create_timer",
        response_model=TimerOut,
        responses={
            200: {
                "model": TimerOut,
                "description": "a replay: the timer this key created",
                "links": _TIMER_LINKS,
            },
            201: {"headers": {"Location": {"schema": {"type": "string"}}}, "links": _TIMER_LINKS},
            **problems(),
        },
    )
    async def create_timer(
        spec: TimerSpec,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                description='"k-1" (quoted, as the draft has it) or k-1; at most 255 characters',
            ),
        ] = None,
    ) -> Response:
        """Create a timer; with an Idempotency-Key, a retry returns the first one."""
        return await creates.one(spec, _key(idempotency_key))

    @router.post("/timers/batch", status_code=201, operation_id="create_batch",
                 response_model=TimerBatch, responses={
        200: {"model": TimerBatch, "description": "every timer was a replay of its key"},
        **problems(),
    })  # fmt: skip
    async def create_batch(batch: BatchIn) -> Response:
        """Create up to 1000 timers in one transaction: all of them, or none."""
        return await creates.batch(batch)

    @router.get("/timers/{timer_id}", operation_id="get_timer", responses=problems(404))
    async def get_timer(timer_id: TimerId) -> TimerOut:
        record = await run_in_threadpool(store.get, timer_id=timer_id)
        if record is None:
            raise ApiProblem(404, f"there is no timer {timer_id}")
        return out(record)

    @router.get("/timers", operation_id="list_timers", responses=problems())
    async def list_timers(
        status: StatusName | None = None,
        idempotency_key: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = DEFAULT_PAGE,
        after: Annotated[
            str | None,
            Query(pattern=r"^[0-9]{1,19}$", description="the next value of the previous page"),
        ] = None,
    ) -> TimerList:
        """Timers in id order, a page at a time (keyset pagination)."""
        if idempotency_key is not None:
            try:
                check_key(idempotency_key)
            except BadKey as exc:
                raise invalid([ProblemItem(field="idempotency_key", detail=str(exc))]) from None
        page = await run_in_threadpool(
            store.list_page,
            status=status,
            idempotency_key=idempotency_key,
            after_id=None if after is None else int(after),
            limit=limit,
        )
        next_after = None if page.next_after_id is None else str(page.next_after_id)
        return TimerList(timers=[out(t) for t in page.timers], next=next_after)

    @router.patch(
        "/timers/{timer_id}", operation_id="reschedule_timer", responses=problems(404, 409)
    )
    async def reschedule_timer(timer_id: TimerId, when: Reschedule) -> TimerOut:
        """Move a waiting timer to a new due time."""
        try:
            due = resolve(
                at=when.at, delay=when.delay, now=clock(), max_horizon_s=rules.max_horizon_s
            )
        except TimeError as exc:
            name = "delay" if when.delay is not None else "at"
            raise invalid([ProblemItem(field=name, detail=str(exc))]) from None
        result = await run_in_threadpool(
            store.reschedule, timer_id=timer_id, due_at=due.due_at, delay_s=due.delay_s
        )
        return found(result, timer_id, "rescheduled")

    @router.delete("/timers/{timer_id}", operation_id="cancel_timer", responses=problems(404, 409))
    async def cancel_timer(timer_id: TimerId) -> TimerOut:
        """Cancel a waiting timer: it will never fire."""
        result = await run_in_threadpool(store.cancel, timer_id=timer_id)
        return found(result, timer_id, "cancelled")

    return router
