"""Hand-off and outcome codecs: round trips, and strict decoding of anything else."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from timer_controller.domain.messages import (
    MalformedMessage,
    decode_handoff,
    decode_outcome,
    encode_handoff,
    encode_outcome,
)
from timer_controller.domain.task import ClaimedTask, Outcome, OutcomeClass

DUE = datetime(2026, 12, 1, 10, 0, 0, 123456)
TASK = ClaimedTask(
    id=42,
    url="https://example.com/hook",
    due_at=DUE,
    attempt=2,
    max_attempts=5,
    method="PUT",
    headers='{"x-a": "b"}',
    body="é body",
)


def test_a_handoff_round_trips_every_field_but_the_local_delay() -> None:
    assert decode_handoff(encode_handoff(TASK)) == TASK


def test_a_handoff_with_only_the_required_fields_round_trips() -> None:
    task = ClaimedTask(id=1, url="http://h/", due_at=DUE, attempt=1, max_attempts=None)

    assert decode_handoff(encode_handoff(task)) == task


def test_an_outcome_round_trips_with_its_attempt() -> None:
    outcome = Outcome(
        42,
        OutcomeClass.RETRYABLE_STATUS,
        status_code=503,
        error="HTTP 503",
        retry_after_s=2.5,
        fired_at=datetime(2026, 12, 1, 10, 0, 1),
        duration_s=0.25,
    )

    decoded = decode_outcome(encode_outcome(TASK, outcome))

    assert (decoded.task_id, decoded.attempt, decoded.max_attempts) == (42, 2, 5)
    assert decoded.due_at == DUE
    assert decoded.outcome == outcome


def _handoff(**changes: Any) -> bytes:
    data = json.loads(encode_handoff(TASK))
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "hand-off is not JSON"),
        (b"{not json", "hand-off is not JSON"),
        (b"\xff\xfe", "hand-off is not UTF-8"),
        (b"[1, 2]", "hand-off is not a JSON object"),
        (b'{"id": 1}', "hand-off has version None, expected 1"),
        (_handoff(v=2), "hand-off has version 2, expected 1"),
        (_handoff(id=...), "field 'id' is missing"),
        (_handoff(id="42"), "field 'id' is invalid: '42' is not a whole number"),
        (_handoff(id=0), "field 'id' is invalid"),
        (_handoff(id=True), "field 'id' is invalid"),
        (_handoff(attempt=1.5), "field 'attempt' is invalid"),
        (_handoff(url=None), "field 'url' is invalid: None is not a string"),
        (_handoff(due_at="tomorrow"), "field 'due_at' is invalid"),
        (_handoff(due_at="2026-12-01T10:00:00+00:00"), "must be naive UTC"),
        (_handoff(headers={"a": "b"}), "field 'headers' is invalid"),
        (_handoff(max_attempts=-1), "field 'max_attempts' is invalid"),
    ],
)
def test_a_malformed_handoff_raises_with_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage) as caught:
        decode_handoff(raw)

    assert reason in str(caught.value)


def _outcome(**changes: Any) -> bytes:
    data = json.loads(encode_outcome(TASK, Outcome(42, OutcomeClass.SUCCESS, status_code=200)))
    data.update(changes)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (_outcome(**{"class": "exploded"}), "field 'class' is invalid"),
        (_outcome(status_code=99), "field 'status_code' is invalid"),
        (_outcome(duration_s=-1), "field 'duration_s' is invalid"),
        (
            b'{"v":1,"id":1,"attempt":1,"max_attempts":null,"due_at":"2026-12-01T10:00:00",'
            b'"class":"success","status_code":200,"error":null,"retry_after_s":null,'
            b'"fired_at":null,"duration_s":NaN}',
            "field 'duration_s' is invalid",
        ),
    ],
)
def test_a_malformed_outcome_raises_with_the_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode_outcome(raw)
