"""The amqp benchmark's verdicts: each target passes and fails on the numbers it names."""

from __future__ import annotations

import pytest

from bench.amqp_scaling import SHIPPED, WIDE, Row, Setup
from bench.amqp_targets import render, verdicts
from bench.metrics import TrialResult


def _row(scenario: str, setup: Setup, rate: float, *, busy: float = 0.5, **more: float) -> Row:
    result = TrialResult(scenario, setup.label, 1 + setup.workers, 100, done=100, done_per_s=rate)
    result.db_cpu_s_per_1k = more.get("db", 0.1)
    result.lateness_ms = {"p99": more.get("p99", 5.0)}
    return Row(scenario, setup, result, more.get("statements", 0.2), machine_busy=busy)


def _slow(rates: list[float], busy: list[float]) -> list[Row]:
    rows = [
        _row("slow", Setup("shipped", "direct", SHIPPED), 100),
        _row("slow", Setup("wide", "direct", WIDE), 1000),
    ]
    for workers, (rate, b) in enumerate(zip(rates, busy, strict=True), start=1):
        rows.append(_row("slow", Setup(f"{workers}w", "amqp", WIDE, workers=workers), rate, busy=b))
    return rows


def _met(rows: list[Row]) -> list[bool]:
    return [met for _, _, met in verdicts(rows)]


def test_scale_out_passes_at_ten_times_shipped_and_near_equal_concurrency() -> None:
    assert all(_met(_slow([400, 800, 1000], [0.5, 0.7, 0.95])))


@pytest.mark.parametrize(
    ("rates", "busy"),
    [
        ([400, 800, 990], [0.5, 0.7, 0.9]),  # 9.9x the shipped setting
        ([400, 800, 700], [0.5, 0.7, 0.9]),  # 0.7x equal concurrency, and a drop while CPU was free
    ],
)
def test_scale_out_fails_below_the_numbers(rates: list[float], busy: list[float]) -> None:
    assert not all(_met(_slow(rates, busy)))


def test_a_drop_with_the_cpu_already_busy_is_the_cpu_limit_not_a_failure() -> None:
    rows = _slow([900, 1000, 990], [0.6, 0.95, 0.97])
    growth = [met for target, _, met in verdicts(rows) if "grows" in target]
    assert growth == [True]


def test_fast_and_light_targets() -> None:
    direct = Setup("direct", "direct")
    amqp = Setup("amqp", "amqp", workers=2)
    good = [_row("fast", direct, 1000), _row("fast", amqp, 600), _row("light", amqp, 20, p99=15)]
    assert _met(good) == [True, True, True, True]
    bad = [
        _row("fast", direct, 1000),
        _row("fast", amqp, 400, statements=0.4, db=0.3),
        _row("light", amqp, 20, p99=25),
    ]
    assert _met(bad) == [False, False, False, False]
    assert render(bad)[2].endswith("| FAIL |")
