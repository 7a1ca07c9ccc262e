"""Every error as ``application/problem+json`` (RFC 9457), with a detail a person can act on."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from timer_controller.errors import StorageError, StorageUnavailable

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
Handler = Callable[[Request, Exception], Awaitable[Response]]
#: Seconds a client should wait before trying again when the database is away.
RETRY_AFTER_S = 5


class ProblemItem(BaseModel):
    """One thing wrong with a request: a field, a batch entry, or both."""

    #: The batch entry (0-based), for /v1/timers/batch.
    index: int | None = None
    #: Where in the request, e.g. ``url`` or ``timers.3.delay``.
    field: str | None = None
    detail: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[ProblemItem] | None = Field(
        default=None, description="every problem found, when there are several"
    )
    timer_status: str | None = Field(
        default=None, description="409: the timer's status now, which forbids the change"
    )


class ApiProblem(Exception):
    """Raised by a route; becomes a problem response."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Sequence[ProblemItem] | None = None,
        headers: Mapping[str, str] | None = None,
        timer_status: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})
        self.timer_status = timer_status


def problem_response(
    status: int,
    detail: str,
    *,
    errors: Sequence[ProblemItem] | None = None,
    headers: Mapping[str, str] | None = None,
    timer_status: str | None = None,
) -> JSONResponse:
    problem = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        errors=list(errors) if errors is not None else None,
        timer_status=timer_status,
    )
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=status,
        headers=dict(headers or {}),
        media_type=PROBLEM_JSON,
    )


def _field(loc: Sequence[int | str]) -> str:
    # ("body", "timers", 3, "url") -> "timers.3.url"; ("query", "limit") -> "limit"
    parts = [str(part) for part in loc[1:]] if len(loc) > 1 else [str(p) for p in loc]
    return ".".join(parts)


def _message(error: Mapping[str, Any]) -> str:
    # Never the input: a header value or a body may be a secret.
    if error.get("type") == "json_invalid":
        return "the body is not valid JSON"
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


def validation_items(errors: Sequence[Mapping[str, Any]]) -> list[ProblemItem]:
    items = []
    for error in errors:
        loc = tuple(error.get("loc", ()))
        index = loc[2] if len(loc) > 2 and loc[:2] == ("body", "timers") else None
        whole = error.get("type") == "json_invalid"
        items.append(
            ProblemItem(
                index=index if isinstance(index, int) else None,
                field=None if whole else _field(loc) or None,
                detail=_message(error),
            )
        )
    return items


def summary(items: Sequence[ProblemItem]) -> str:
    """One sentence naming the first problem and how many more there are."""
    first = items[0]
    where = f"{first.field}: " if first.field else ""
    more = f" (and {len(items) - 1} more problems, listed in errors)" if len(items) > 1 else ""
    return f"{where}{first.detail}{more}"


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    return problem_response(
        exc.status,
        exc.detail,
        errors=exc.errors,
        headers=exc.headers,
        timer_status=exc.timer_status,
    )


async def _on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    items = validation_items(exc.errors())
    if not items:
        items = [ProblemItem(detail="the request is invalid")]
    return problem_response(422, summary(items), errors=items)


async def _on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
    if exc.status_code == 400 and detail == "There was an error parsing the body":
        detail = "the body cannot be read: send JSON in UTF-8"
    elif exc.status_code == 404 and detail == "Not Found":
        detail = f"there is no resource at {request.url.path}"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(exc.status_code, detail, headers=exc.headers)


async def _on_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", exc)
    return problem_response(
        503,
        f"the database is unavailable ({exc}); try again in {RETRY_AFTER_S} seconds",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _on_storage(request: Request, exc: Exception) -> JSONResponse:
    # Validation keeps every input the schema cannot hold away from the database,
    # so this is a fault of ours: the reason goes to the log, not to the client.
    log.error("database error on %s %s: %s", request.method, request.url.path, exc)
    return problem_response(500, "the database refused the operation; see the api's log")


async def _on_crash(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(500, "an internal error occurred; see the api's log")


#: Most specific first: the first that matches answers, as Starlette picks by class.
_HANDLERS: tuple[tuple[type[Exception], Handler], ...] = (
    (ApiProblem, _on_problem),
    (RequestValidationError, _on_validation),
    (StarletteHTTPException, _on_http),
    (StorageUnavailable, _on_unavailable),
    (StorageError, _on_storage),
    (Exception, _on_crash),
)


async def error_response(request: Request, exc: Exception) -> Response:
    """The answer the app's handlers give ``exc``, for a request answered outside its routes."""
    for kind, handler in _HANDLERS:
        if isinstance(exc, kind):
            return await handler(request, exc)
    raise AssertionError("Exception matches every exception")


def install(app: FastAPI) -> None:
    for kind, handler in _HANDLERS:
        app.add_exception_handler(kind, handler)
