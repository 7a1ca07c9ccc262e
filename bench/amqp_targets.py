"""Issue 11's speed targets, judged from one ``bench.amqp_scaling`` run."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

Verdict = tuple[str, str, bool]
#: A trial whose machine was this busy was limited by CPU, not by workers.
CPU_BOUND = 0.9


def _pick(rows: list[Any], scenario: str, mode: str, in_flight: str | None = None) -> list[Any]:
    return [
        r
        for r in rows
        if r.scenario == scenario
        and r.setup.mode == mode
        and (in_flight is None or r.setup.env.get("MAX_IN_FLIGHT", "100") == in_flight)
    ]


def _rate(row: Any) -> float:
    return float(row.result.done_per_s)


def verdicts(rows: list[Any]) -> Iterator[Verdict]:
    """(target, measured, met) for every target the run has the rows for."""
    shipped = _pick(rows, "slow", "direct", "100")
    wide = _pick(rows, "slow", "direct", "2000")
    amqp = sorted(_pick(rows, "slow", "amqp"), key=lambda r: r.setup.workers)
    if shipped and wide and amqp:
        most = amqp[-1]
        n = most.setup.workers
        yield (
            f"slow: amqp with {n} workers ≥ 10× direct at MAX_IN_FLIGHT=100",
            f"{_rate(most) / _rate(shipped[0]):.1f}× ({_rate(most):,.0f} vs "
            f"{_rate(shipped[0]):,.0f} /s)",
            _rate(most) >= 10 * _rate(shipped[0]),
        )
        yield (
            f"slow: amqp with {n} workers ≥ 0.8× direct at MAX_IN_FLIGHT=2000",
            f"{_rate(most) / _rate(wide[0]):.2f}× ({_rate(most):,.0f} vs {_rate(wide[0]):,.0f} /s)",
            _rate(most) >= 0.8 * _rate(wide[0]),
        )
        rates = [_rate(r) for r in amqp]
        yield (
            "slow: throughput grows with workers (until the CPU is the limit)",
            " → ".join(f"{r.setup.workers}: {_rate(r):,.0f}/s" for r in amqp)
            + f"; machine busy {' → '.join(f'{r.machine_busy:.0%}' for r in amqp)}",
            # Each step adds throughput, unless the step before had the CPU busy already.
            all(
                rates[i] > rates[i - 1] or amqp[i - 1].machine_busy >= CPU_BOUND
                for i in range(1, len(amqp))
            ),
        )
    yield from _fast_and_light(rows)


def _fast_and_light(rows: list[Any]) -> Iterator[Verdict]:
    fast_direct, fast_amqp = _pick(rows, "fast", "direct"), _pick(rows, "fast", "amqp")
    if fast_direct and fast_amqp:
        d, a = fast_direct[0], fast_amqp[0]
        yield (
            "fast: amqp ≥ 0.5× direct",
            f"{_rate(a) / _rate(d):.2f}× ({_rate(a):,.0f} vs {_rate(d):,.0f} /s)",
            _rate(a) >= 0.5 * _rate(d),
        )
        yield (
            "fast: the controller's statements per timer, amqp ≤ direct",
            f"{a.statements_per_task:.4f} vs {d.statements_per_task:.4f}",
            a.statements_per_task <= d.statements_per_task * 1.05,
        )
        yield (
            "fast: DB CPU per timer, amqp ≤ direct",
            f"{a.result.db_cpu_s_per_1k:.2f} vs {d.result.db_cpu_s_per_1k:.2f} s / 1k",
            a.result.db_cpu_s_per_1k <= d.result.db_cpu_s_per_1k * 1.1,
        )
    light = _pick(rows, "light", "amqp")
    if light:
        p99 = light[0].result.lateness_ms.get("p99", math.nan)
        yield ("light load: p99 lateness through the broker ≤ 20 ms", f"{p99:.1f} ms", p99 <= 20)


def render(rows: list[Any]) -> list[str]:
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    for target, measured, met in verdicts(rows):
        lines.append(f"| {target} | {measured} | {'PASS' if met else 'FAIL'} |")
    return lines
