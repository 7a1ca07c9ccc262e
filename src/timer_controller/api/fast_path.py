"""The creates' usual requests, answered without FastAPI's request machinery.

FastAPI's parameter handling (dependencies, body and header parameters)
cost a single create more than everything the create itself does. A
``POST /v1/timers`` or ``/v1/timers/batch`` that is plainly well formed (a
known bearer token, a JSON body that is a valid TimerSpec or BatchIn, a
well-formed Idempotency-Key, no query) is answered here, by the very code the
routes call (``creating.py``, ``validation.py``). Anything else — a missing
token, a body that is not JSON, an unknown field — goes on to the FastAPI
app with its body replayed, so every refusal is the one FastAPI gives.
The routes stay where they are, so the OpenAPI schema is theirs.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel, ValidationError
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from timer_controller.api.auth import BearerAuth
from timer_controller.api.creating import Creates
from timer_controller.api.idempotency import BadKey, parse_key_header
from timer_controller.api.models import BatchIn, TimerSpec
from timer_controller.api.problems import error_response

_WANTED = (b"authorization", b"content-type", b"idempotency-key")
Answer = Callable[[Any, str | None], Awaitable[Response]]


class _Pass(Exception):
    """Not a request for the fast path: FastAPI answers it."""


def _replayed(messages: Sequence[Message], receive: Receive, failure: Exception | None) -> Receive:
    """``receive`` again, starting with ``messages`` already read, then ``failure`` if any."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        if failure is not None:
            raise failure
        return await receive()

    return replay


async def _read(receive: Receive) -> tuple[list[Message], Exception | None]:
    messages: list[Message] = []
    try:
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                return messages, None
    except Exception as exc:  # the size limit's 413: FastAPI's read raises it again
        return messages, exc


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The headers this path reads; _Pass when any of them is repeated."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name in _WANTED:
            if name in found:
                raise _Pass
            found[name] = value
    return found


def _body(messages: Sequence[Message]) -> object:
    if messages[-1]["type"] != "http.request":
        raise _Pass
    raw = b"".join(m.get("body", b"") for m in messages)
    if not raw:
        raise _Pass
    try:
        # As FastAPI reads a JSON body (Request.json).
        return json.loads(raw)
    except ValueError:
        raise _Pass from None


class FastCreates:
    """Pure ASGI middleware in front of the app's routes (inside metrics and the size limit)."""

    def __init__(
        self, app: ASGIApp, *, creates: Creates, auth: BearerAuth, routes: Sequence[BaseRoute]
    ) -> None:
        self.app = app
        self._auth = auth
        self._paths: Mapping[str, tuple[BaseRoute, type[BaseModel], Answer, bool]] = {}
        answers: dict[str, tuple[type[BaseModel], Answer, bool]] = {
            "/v1/timers": (TimerSpec, creates.one, True),
            "/v1/timers/batch": (BatchIn, lambda batch, _key: creates.batch(batch), False),
        }
        self._paths = {
            route.path: (route, *answers[route.path])  # type: ignore[attr-defined]
            for route in routes
            if getattr(route, "path", None) in answers and "POST" in getattr(route, "methods", ())
        }
        assert set(self._paths) == set(answers), "the create routes are missing"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self._paths.get(scope["path"]) if scope["type"] == "http" else None
        if target is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        route, model, answer, keyed = target
        messages, failure = await _read(receive)
        try:
            if failure is not None or scope.get("query_string"):
                raise _Pass
            headers = _headers(scope)
            if headers.get(b"content-type") != b"application/json":
                raise _Pass
            if not self._auth.admits(headers.get(b"authorization", b"").decode("latin-1")):
                raise _Pass
            key = self._key(headers.get(b"idempotency-key"), keyed=keyed)
            spec = model.model_validate(_body(messages))
        except (_Pass, ValidationError):
            await self.app(scope, _replayed(messages, receive, failure), send)
            return
        # For the metrics, as FastAPI's router would have set it.
        scope["route"] = route
        try:
            response = await answer(spec, key)
        except Exception as exc:
            response = await error_response(Request(scope), exc)
        await response(scope, receive, send)

    @staticmethod
    def _key(raw: bytes | None, *, keyed: bool) -> str | None:
        if raw is None:
            return None
        if not keyed:  # the batch takes its keys in the body: FastAPI ignores the header
            return None
        try:
            return parse_key_header(raw.decode("latin-1"))
        except BadKey:
            raise _Pass from None
