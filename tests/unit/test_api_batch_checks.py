"""check_batch checks entries shaped alike by their URL alone: it answers as check_timer does."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from timer_controller.api.models import BatchIn
from timer_controller.api.validation import InvalidTimer, TimerRules, check_batch, check_timer
from timer_controller.db.timers import NewTimer
from timer_controller.delivery.policy import TargetPolicy

NOW = datetime(2026, 12, 1, 10, 0, 0)
RULES = TimerRules(
    policy=TargetPolicy(block_private_networks=True), max_body_bytes=8, max_horizon_s=86400.0
)

_URLS = st.sampled_from(
    [
        "https://example.com/a",
        "https://example.com/b/c",
        "https://example.com/d",
        "https://example.net/e",
        "http://10.0.0.1/private",
        "ftp://example.com/",
        "https://example.com/\ud800",
        "https://example.com/q?x=1",
        "https://example.com/" + "a" * 2100,
        "example.com/nope",
    ]
)
_FIELDS: dict[str, list[Any]] = {
    "method": ["post", "GET", "TRACE"],
    "headers": [{"X-A": "1"}, {"Bad Name": "1"}, {"X-B": "\ud800"}],
    "body": ["hi", "x" * 20, "\ud800"],
    "max_attempts": [1, 7],
    "delay": [5, 5.0, "5", "90s", "2d", "x"],
    "at": ["2026-12-01T11:00:00Z", "2030-01-01T00:00:00Z"],
}


@st.composite
def shapes(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A valid shape, and variants of it that differ from it in one field each."""
    base: dict[str, Any] = draw(st.sampled_from([{"delay": 5}, {"at": _FIELDS["at"][0]}]))
    variants = [base]
    for name in draw(st.lists(st.sampled_from(sorted(_FIELDS)), min_size=1, max_size=4)):
        variant = {**base, name: draw(st.sampled_from(_FIELDS[name]))}
        if name in ("at", "delay"):  # exactly one of them
            variant.pop("delay" if name == "at" else "at", None)
        variants.append(variant)
    return variants


def one_by_one(batch: BatchIn) -> list[NewTimer] | list[Any]:
    """check_timer on each entry (none has a key): the rows, or every problem."""
    timers, items = [], []
    for index, spec in enumerate(batch.timers):
        try:
            timers.append(check_timer(spec, rules=RULES, now=NOW, index=index))
        except InvalidTimer as exc:
            items += exc.items
    return items or timers


@settings(max_examples=300, deadline=None)
@given(data=st.data(), variants=shapes())
def test_a_batch_is_checked_as_each_entry_would_be(
    data: st.DataObject, variants: list[dict[str, Any]]
) -> None:
    picks = st.tuples(_URLS, st.sampled_from(variants))
    entries = data.draw(st.lists(picks, min_size=2, max_size=8))
    batch = BatchIn.model_validate({"timers": [{"url": u, **shape} for u, shape in entries]})

    try:
        answer: list[NewTimer] | list[Any] = check_batch(batch, rules=RULES, now=NOW)
    except InvalidTimer as exc:
        answer = exc.items

    assert answer == one_by_one(batch)
