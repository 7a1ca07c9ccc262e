"""What ``POST /v1/timers`` and ``POST /v1/timers/batch`` do, once for every way in.

The FastAPI routes (``routes.py``) and the fast path (``fast_path.py``)
both call these, so a create means the same whichever way it came.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import Response
from pydantic_core import to_json
from starlette.concurrency import run_in_threadpool

from timer_controller.api.answers import batch_json
from timer_controller.api.grouping import CreateGroups
from timer_controller.api.models import BatchIn, TimerSpec, rfc3339, timer_fields
from timer_controller.api.problems import ApiProblem, ProblemItem, summary
from timer_controller.api.validation import (
    InvalidTimer,
    TimerRules,
    check_batch_chunks,
    check_timer,
    storable_keys,
)
from timer_controller.db.timers import BatchCreated, KeyConflict, TimerStore
from timer_controller.errors import StorageError

#: Entries checked (and inserted) at a time within a batch's one transaction: the
#: database inserts one run while the next is checked.
BATCH_CHUNK = 200


_JSON = "application/json"


def _json(content: object, *, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``content`` (TimerOut's fields) serialised once by pydantic-core, as a TimerOut would be.

    The creates' answers skip FastAPI's re-validation and a model per timer.
    """
    return Response(to_json(content), status_code=status, headers=headers, media_type=_JSON)


def invalid(items: list[ProblemItem]) -> ApiProblem:
    return ApiProblem(422, summary(items), errors=items)


def _key_reused(conflict: KeyConflict, *, batch: bool) -> ApiProblem:
    items = [
        ProblemItem(
            index=index if batch else None,
            field=f"timers.{index}.idempotency_key" if batch else "Idempotency-Key",
            detail=f"idempotency key {timer.idempotency_key!r} belongs to timer {timer.id}, "
            "created by a different request; send that request again or use a new key",
        )
        for index, timer in sorted(conflict.existing.items())
    ]
    return invalid(items)


class Creates:
    """Creates, one (grouped with its neighbours: ``grouping.py``) or a batch.

    Each answers the response, or raises ApiProblem (or the store's StorageError).
    """

    def __init__(
        self, *, store: TimerStore, rules: TimerRules, clock: Callable[[], datetime]
    ) -> None:
        self._store = store
        self._rules = rules
        self._clock = clock
        self._groups = CreateGroups(store.create_each)

    async def one(self, spec: TimerSpec, key: str | None) -> Response:
        try:
            timer = check_timer(spec, rules=self._rules, now=self._clock(), idempotency_key=key)
            created = await self._groups.create(timer)
        except InvalidTimer as exc:
            raise invalid(exc.items) from None
        except KeyConflict as exc:
            raise _key_reused(exc, batch=False) from None
        return _json(
            timer_fields(created.timer, self._rules.default_max_attempts, time=rfc3339),
            status=201 if created.created else 200,
            headers={"Location": f"/v1/timers/{created.timer.id}"},
        )

    async def batch(self, batch: BatchIn) -> Response:
        rules = self._rules

        def create() -> BatchCreated:
            # Checking a thousand timers takes a while: off the event loop, a chunk
            # at a time while the database inserts the chunk before (create_batch).
            now = self._clock()
            chunks = check_batch_chunks(batch, rules=rules, now=now, size=BATCH_CHUNK)
            try:
                return self._store.create_batch(chunks=chunks, keys=storable_keys(batch))
            except StorageError:
                # A batch with a problem is a 422 whatever the database did: the rest of
                # the checks run (raising InvalidTimer) before its error is told.
                for _ in chunks:
                    pass
                raise

        try:
            done = await run_in_threadpool(create)
        except InvalidTimer as exc:
            raise invalid(exc.items) from None
        except KeyConflict as exc:
            raise _key_reused(exc, batch=True) from None
        answer = batch_json(done, default_max_attempts=rules.default_max_attempts)
        return Response(answer, status_code=201 if done.decided else 200, media_type=_JSON)
