"""From the overview's counts to what the page shows: quantiles and charts (pure)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup

from timer_controller.api.ui.charts import Series, bar_chart, log_line_chart
from timer_controller.db.stats import Overview


def bucket_labels(bounds_ms: Sequence[float]) -> list[str]:
    """``< 1 ms``, ``1–2 ms``, … ``≥ 60 s``: one label per histogram bucket."""

    def short(ms: float) -> str:
        return f"{ms / 1000:g} s" if ms >= 1000 else f"{ms:g} ms"

    labels = [f"< {short(bounds_ms[0])}"]
    labels += [f"{short(lo)}–{short(hi)}" for lo, hi in itertools.pairwise(bounds_ms)]
    labels.append(f"≥ {short(bounds_ms[-1])}")
    return labels


def decade_ticks(bounds_ms: Sequence[float]) -> list[tuple[int, str]]:
    """Axis labels at the bucket boundaries that are whole decades (1 ms, 10 ms, …)."""
    ticks = []
    for index, ms in enumerate(bounds_ms, start=1):
        if ms in (1, 10, 100, 1000, 10_000) or index == len(bounds_ms):
            ticks.append((index, f"{ms / 1000:g} s" if ms >= 1000 else f"{ms:g} ms"))
    return ticks


def quantile_ms(counts: Sequence[int], bounds_ms: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of a histogram, interpolated inside its bucket.

    As Prometheus' ``histogram_quantile`` does: linear within a bucket, the
    lower bound for the open top bucket, None for an empty histogram.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index == len(bounds_ms):
                return float(bounds_ms[-1])
            low = 0.0 if index == 0 else float(bounds_ms[index - 1])
            high = float(bounds_ms[index])
            return low + (high - low) * (rank - seen) / count
        seen += count
    return float(bounds_ms[-1])


@dataclass(frozen=True, slots=True)
class Figures:
    fired_last_hour: int
    first_attempts_last_hour: int
    p50_ms: float | None
    p99_ms: float | None
    histogram: list[tuple[str, int]]
    fired_chart: Markup
    lateness_chart: Markup
    histogram_chart: Markup
    failed_chart: Markup


def figures(overview: Overview) -> Figures:
    bounds = overview.lateness_bounds_ms
    per_minute = overview.lateness_per_minute
    whole_hour = [sum(column) for column in zip(*per_minute, strict=True)]
    labels = bucket_labels(bounds)
    p50s = [quantile_ms(minute, bounds, 0.5) for minute in per_minute]
    p99s = [quantile_ms(minute, bounds, 0.99) for minute in per_minute]
    return Figures(
        fired_last_hour=sum(overview.fired_per_minute),
        first_attempts_last_hour=sum(whole_hour),
        p50_ms=quantile_ms(whole_hour, bounds, 0.5),
        p99_ms=quantile_ms(whole_hour, bounds, 0.99),
        histogram=list(zip(labels, whole_hour, strict=True)),
        fired_chart=bar_chart("fired", "Timers fired per minute", overview.fired_per_minute),
        lateness_chart=log_line_chart(
            "lateness",
            "Lateness of first attempts per minute, p50 and p99",
            [Series("p50", p50s, "line-p50"), Series("p99", p99s, "line-p99")],
            unit="ms",
        ),
        histogram_chart=bar_chart(
            "histogram",
            "Lateness of first attempts over the last hour",
            whole_hour,
            labels=labels,
            ticks=decade_ticks(bounds),
            css_class="bar bar-histogram",
        ),
        failed_chart=bar_chart(
            "failed",
            "Timers failed per minute",
            overview.failed_per_minute,
            css_class="bar bar-failed",
        ),
    )


def format_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms >= 1000:
        return f"{ms / 1000:.2f} s"
    return f"{ms:.1f} ms"
