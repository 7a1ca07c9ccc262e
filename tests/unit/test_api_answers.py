"""A batch's answer, written directly (answers.py), is the bytes its models would give."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from timer_controller.api.answers import batch_json
from timer_controller.api.models import TimerBatch, TimerOut
from timer_controller.db.timers import BatchCreated, NewTimer, TimerRecord

_SPECIAL = st.sampled_from(['"', "\\", "\x00", "\x1f", "\x7f", "\u2028", "\b", "\t", "/", "%"])
_TEXT = st.text(st.characters(codec="utf-8") | _SPECIAL, max_size=8)
_TIMES = st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31))
_SECONDS = st.sampled_from([0.0, 1e-6, 5e-5, 1e-4, 0.5, 3600.0, 1e15, 2e16]) | st.floats(0, 1e17)

_NEW = st.builds(
    NewTimer,
    url=st.sampled_from(["http://x/a", 'http://x/"q"\\', "http://x/%s%d", "http://ü/"]) | _TEXT,
    delay_s=st.just(1.0),
    method=st.none() | st.sampled_from(["PUT", " get ", "", "%s"]),
    headers=st.none()
    | st.sampled_from(["{}", '{"X-A": "1", "X-%s": "2"}', "[1]", "not json", " "]),
    body=st.none() | _TEXT,
    max_attempts=st.none() | st.integers(1, 1000),
    idempotency_key=st.none() | _TEXT,
)
_SERVER_TIMES = _TIMES.map(lambda time: f"{time:%Y-%m-%d %H:%M:%S.%f}") | st.just(
    "2026-12-01 10:00:00.000000"
)
_DECIDED = st.tuples(st.integers(1, 2**63 - 1), _SERVER_TIMES, _SERVER_TIMES, _SECONDS)


@st.composite
def batches(draw: st.DrawFn) -> BatchCreated:
    timers = draw(st.lists(_NEW, min_size=1, max_size=6))
    replayed: dict[int, TimerRecord] = {}
    decided = []
    for index, timer in enumerate(timers):
        if draw(st.booleans()):
            decided.append(draw(_DECIDED))
            continue
        record = draw(
            st.builds(
                TimerRecord,
                id=st.integers(1, 2**63 - 1),
                url=st.just(timer.url),
                method=st.none() | st.just("GET"),
                status=st.sampled_from(["waiting", "done", "failed"]),
                due_at=_TIMES,
                attempts=st.integers(0, 9),
                max_attempts=st.none() | st.integers(1, 9),
                last_status_code=st.none() | st.integers(100, 599),
                last_error=st.none() | _TEXT,
                created_at=_TIMES,
                fired_at=st.none() | _TIMES,
                finished_at=st.none() | _TIMES,
                idempotency_key=st.just(timer.idempotency_key),
                idempotency_hash=st.none(),
                header_names=st.none() | st.lists(_TEXT, max_size=2).map(tuple),
                body_bytes=st.none() | st.integers(0, 99),
                time_left_s=_SECONDS,
            )
        )
        replayed[index] = record
    return BatchCreated(timers=timers, decided=decided, replayed=replayed)


@settings(max_examples=400, deadline=None)
@given(done=batches(), most=st.integers(1, 1000))
def test_a_batchs_answer_is_its_models_json(done: BatchCreated, most: int) -> None:
    models = [TimerOut.of(c.timer, default_max_attempts=most) for c in done.created()]
    expected = TimerBatch.model_construct(timers=models).model_dump_json().encode()

    assert batch_json(done, default_max_attempts=most) == expected
