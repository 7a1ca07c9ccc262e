"""Hand-off and outcome codecs: round trips, and strict decoding of anything else."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest

from timer_controller.domain.messages import (
    BadHandOff,
    MalformedMessage,
    decode_handoff,
    decode_handoff_message,
    decode_handoffs,
    decode_outcome,
    decode_outcomes,
    encode_handoff,
    encode_outcome,
    encode_outcomes,
    handoff_part,
    pack_handoffs,
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


def test_a_batch_of_outcomes_round_trips_in_order() -> None:
    other = ClaimedTask(id=7, url="http://h/", due_at=DUE, attempt=1, max_attempts=None)
    reports = [
        (TASK, Outcome(42, OutcomeClass.SUCCESS, status_code=200)),
        (other, Outcome(7, OutcomeClass.TIMEOUT, error="timed out", duration_s=10.0)),
    ]

    decoded = decode_outcomes(encode_outcomes(reports))

    assert [(d.task_id, d.attempt, d.outcome) for d in decoded] == [
        (42, 2, reports[0][1]),
        (7, 1, reports[1][1]),
    ]
    assert json.loads(encode_outcomes(reports))["v"] == 2


def test_a_lone_version_1_outcome_still_reads_as_a_batch_of_one() -> None:
    [decoded] = decode_outcomes(encode_outcome(TASK, Outcome(42, OutcomeClass.SUCCESS)))

    assert (decoded.task_id, decoded.attempt) == (42, 2)


def _batch(*items: Any) -> bytes:
    return json.dumps({"v": 2, "outcomes": list(items)}).encode()


GOOD = json.loads(encode_outcome(TASK, Outcome(42, OutcomeClass.SUCCESS, status_code=200)))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (_batch(), "field 'outcomes' is not a list of 1 to 1000 outcomes"),
        (json.dumps({"v": 2, "outcomes": {}}).encode(), "field 'outcomes' is not a list"),
        (json.dumps({"v": 2}).encode(), "field 'outcomes' is not a list"),
        (_batch(GOOD, 5), "outcome 1 is not a JSON object"),
        (_batch(GOOD, GOOD | {"class": "exploded"}), "outcome 1: field 'class' is invalid"),
        (_batch(GOOD | {"id": 0}, GOOD), "outcome 0: field 'id' is invalid"),
        (json.dumps({"v": 3, "outcomes": [GOOD]}).encode(), "version 3, expected 1 or 2"),
        (json.dumps({"v": True, "outcomes": [GOOD]}).encode(), "version True"),
    ],
)
def test_a_batch_with_one_malformed_outcome_is_malformed_as_a_whole(
    raw: bytes, reason: str
) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode_outcomes(raw)


def test_a_batch_holds_one_to_max_batch_outcomes() -> None:
    with pytest.raises(ValueError, match="1 to 1000"):
        encode_outcomes([])


OTHER = ClaimedTask(id=7, url="http://h/", due_at=DUE, attempt=1, max_attempts=None)
TASK_FIELDS = json.loads(handoff_part(TASK))


def _tasks(*items: Any) -> bytes:
    return json.dumps({"v": 2, "tasks": list(items)}).encode()


def test_a_batch_of_handoffs_round_trips_in_order() -> None:
    raw = pack_handoffs([handoff_part(TASK), handoff_part(OTHER)])

    assert json.loads(raw)["v"] == 2
    assert decode_handoffs(raw) == [TASK, OTHER]


def test_a_lone_handoff_is_written_and_still_read_as_version_1() -> None:
    raw = pack_handoffs([handoff_part(TASK)])

    assert raw == encode_handoff(TASK)
    assert json.loads(raw) == {"v": 1, **TASK_FIELDS}
    assert decode_handoffs(raw) == [TASK]
    assert decode_handoff(raw) == TASK


def test_a_bad_task_in_a_batch_fails_alone_naming_its_attempt() -> None:
    raw = _tasks(TASK_FIELDS, TASK_FIELDS | {"id": 8, "url": 5}, json.loads(handoff_part(OTHER)))

    first, bad, last = decode_handoffs(raw)

    assert (first, last) == (TASK, OTHER)
    assert isinstance(bad, BadHandOff)
    assert "task 1: field 'url' is invalid" in bad.reason
    assert bad.task == ClaimedTask(id=8, url="", due_at=DUE, attempt=2, max_attempts=5)


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        (5, "task 1 is not a JSON object"),
        (TASK_FIELDS | {"id": "x"}, "task 1: field 'id' is invalid"),
        (TASK_FIELDS | {"attempt": 0, "url": None}, "task 1: field 'url' is invalid"),
    ],
)
def test_a_bad_task_that_names_no_attempt_fails_alone_without_one(item: Any, reason: str) -> None:
    first, bad = decode_handoffs(_tasks(TASK_FIELDS, item))

    assert first == TASK
    assert isinstance(bad, BadHandOff)
    assert bad.task is None
    assert reason in bad.reason


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (_tasks(), "field 'tasks' is not a list of 1 to 1000 hand-offs"),
        (json.dumps({"v": 2, "tasks": {}}).encode(), "field 'tasks' is not a list"),
        (json.dumps({"v": 2}).encode(), "field 'tasks' is not a list"),
        (json.dumps({"v": 3, "tasks": [TASK_FIELDS]}).encode(), "version 3, expected 1 or 2"),
        (_handoff(url=None), "field 'url' is invalid"),
    ],
)
def test_a_message_that_is_no_batch_of_handoffs_is_malformed_as_a_whole(
    raw: bytes, reason: str
) -> None:
    with pytest.raises(MalformedMessage, match=reason):
        decode_handoffs(raw)


@pytest.mark.parametrize("count", [1, 2])
def test_a_handoff_message_carries_how_soon_its_requests_must_end(count: int) -> None:
    raw = pack_handoffs([handoff_part(TASK)] * count, finish_within_s=60)

    message = decode_handoff_message(raw)

    assert message.finish_within_s == 60.0
    assert message.tasks == [TASK] * count
    assert decode_handoff_message(encode_handoff(TASK)).finish_within_s is None


@pytest.mark.parametrize("value", [-1, "60", None, True])
def test_a_bad_finish_within_makes_the_message_malformed(value: Any) -> None:
    raw = json.dumps({"v": 2, "finish_within_s": value, "tasks": [TASK_FIELDS]}).encode()

    with pytest.raises(MalformedMessage, match="field 'finish_within_s' is invalid"):
        decode_handoff_message(raw)
