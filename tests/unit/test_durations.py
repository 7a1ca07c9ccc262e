"""Human durations: 30s, 15m, 12h, 7d."""

from __future__ import annotations

import pytest

from timer_controller.domain.durations import parse_duration_s


@pytest.mark.parametrize(
    ("raw", "expected_s"),
    [
        ("0", 0.0),
        ("30", 30.0),
        ("1.5", 1.5),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("15m", 900.0),
        ("12h", 43200.0),
        ("7d", 604800.0),
        ("2w", 1209600.0),
        ("1.5h", 5400.0),
        ("0.5m", 30.0),
        (" 10 s ", 10.0),
        ("10 m", 600.0),
        ("0d", 0.0),
        (0, 0.0),
        (5, 5.0),
        (2.5, 2.5),
        (10**9, 1e9),
    ],
)
def test_parse_duration(raw: str | float, expected_s: float) -> None:
    assert parse_duration_s(raw) == expected_s


@pytest.mark.parametrize(
    "raw",
    [
        "",
        " ",
        "abc",
        "s",
        "-5",
        "-5s",
        "5x",
        "5 mins",
        "1e3",
        "1,5",
        "5s5",
        "5ss",
        "0x10",
        ".5",
        "5.",
        "+5",
        "True",
    ],
)
def test_parse_duration_rejects_with_a_hint(raw: str) -> None:
    with pytest.raises(ValueError, match="is not a duration; use a number of seconds") as caught:
        parse_duration_s(raw)

    assert repr(raw) in str(caught.value)
    assert "30s, 15m, 7d" in str(caught.value)


@pytest.mark.parametrize("raw", [-1, -0.5])
def test_parse_duration_rejects_negative_numbers(raw: float) -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        parse_duration_s(raw)


def test_a_bool_is_not_a_number_of_seconds() -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration_s(True)


@pytest.mark.parametrize("raw", ["9" * 400, "1" + "0" * 400 + "d", 1e400, float("nan"), "36501d"])
def test_parse_duration_refuses_infinite_and_huge_values(raw: str | float) -> None:
    with pytest.raises(ValueError, match="must be at most 36500d"):
        parse_duration_s(raw)


def test_parse_duration_takes_a_caller_maximum() -> None:
    assert parse_duration_s("1h", max_s=3600) == 3600.0
    with pytest.raises(ValueError, match="must be at most 1h"):
        parse_duration_s("61m", max_s=3600)


def test_parse_duration_cuts_a_huge_input_in_its_message() -> None:
    with pytest.raises(ValueError, match="is not a duration") as caught:
        parse_duration_s("x" * 2_000_000)

    assert len(str(caught.value)) < 300
    assert "2000000 characters" in str(caught.value)


def test_a_trailing_newline_is_white_space_not_a_loophole() -> None:
    assert parse_duration_s("5s\n") == 5.0
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration_s("5s\nx")
