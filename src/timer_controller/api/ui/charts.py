"""Small SVG charts drawn on the server: pure functions from numbers to markup.

No JavaScript and nothing fetched: a cluster without internet shows them as
well as a laptop. Every chart has a ``<title>`` and a ``<desc>`` for screen
readers; the page shows the same numbers as text beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH = 600
HEIGHT = 200
LEFT = 68  # room for the y axis labels (at the larger size a phone uses)
RIGHT = 14  # room for the last x label
BOTTOM = 26  # room for the x axis labels
TOP = 12
PLOT_W = WIDTH - LEFT - RIGHT


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a line chart; ``None`` leaves a gap (a minute with no data)."""

    name: str
    values: Sequence[float | None]
    css_class: str


def _frame(chart_id: str, title: str, desc: str, body: list[str]) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
        f'<desc id="{chart_id}-desc">{escape(desc)}</desc>' + "".join(body) + "</svg>"
    )


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 × 10ⁿ at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        candidate = step * 10.0**exponent
        if candidate >= value:
            return candidate
    raise AssertionError("unreachable")


def _axes(
    y_labels: Sequence[tuple[float, str]], x_labels: Sequence[tuple[float, str]]
) -> list[str]:
    plot_bottom = HEIGHT - BOTTOM
    parts = [
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{plot_bottom}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{plot_bottom}" x2="{LEFT + PLOT_W}" '
        f'y2="{plot_bottom}"/>',
    ]
    for y, label in y_labels:
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + PLOT_W}" y2="{y:.1f}"/>'
        )
        parts.append(
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(label)}</text>"
        )
    for x, label in x_labels:
        # Labels at the edges are anchored inside, so none is cut off.
        anchor = "start" if x < LEFT + 30 else "end" if x > LEFT + PLOT_W - 30 else "middle"
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{HEIGHT - 7}" text-anchor="{anchor}">'
            f"{escape(label)}</text>"
        )
    return parts


def _minute_labels(count: int) -> list[tuple[float, str]]:
    slot = PLOT_W / count
    marks = [(0, f"−{count} min"), (count // 2, f"−{count - count // 2} min"), (count, "now")]
    return [(LEFT + slot * i, label) for i, label in marks]


def bar_chart(
    chart_id: str,
    title: str,
    values: Sequence[int],
    *,
    css_class: str = "bar",
    labels: Sequence[str] | None = None,
    ticks: Sequence[tuple[int, str]] = (),
    unit: str = "",
) -> Markup:
    """Vertical bars, one per value; per minute unless ``labels`` name each bar.

    ``ticks`` label bar boundaries on the x axis: ``(3, "10 ms")`` sits
    between the third and the fourth bar.
    """
    top = _nice_max(max(values, default=0))
    plot_h = HEIGHT - BOTTOM - TOP
    slot = PLOT_W / max(1, len(values))
    body: list[str] = []
    for i, value in enumerate(values):
        if value <= 0:
            continue
        h = plot_h * value / top
        x = LEFT + slot * i + slot * 0.1
        body.append(
            f'<rect class="{css_class}" x="{x:.1f}" y="{TOP + plot_h - h:.1f}" '
            f'width="{slot * 0.8:.1f}" height="{h:.1f}">'
            f"<title>{escape(labels[i] if labels else f'−{len(values) - 1 - i} min')}: "
            f"{value}{escape(unit)}</title></rect>"
        )
    y_labels = [(TOP + plot_h, "0"), (TOP, f"{top:g}")]
    if labels:
        x_labels = [(LEFT + slot * i, label) for i, label in ticks]
    else:
        x_labels = _minute_labels(len(values))
    desc = f"{sum(values)} in all; at most {max(values, default=0)} in one bar."
    return _frame(chart_id, title, desc, _axes(y_labels, x_labels) + body)


def log_line_chart(chart_id: str, title: str, series: Sequence[Series], *, unit: str) -> Markup:
    """Lines over per-minute values on a log scale (lateness spans 1 ms to minutes)."""
    present = [v for s in series for v in s.values if v is not None]
    low = 1.0
    # Whole decades, so every grid line is a power of ten.
    high = 10.0 ** max(1, math.ceil(math.log10(max(present, default=1.0))))
    plot_h = HEIGHT - BOTTOM - TOP
    span = math.log10(high) - math.log10(low)

    def y_of(value: float) -> float:
        return TOP + plot_h * (1 - (math.log10(max(value, low)) - math.log10(low)) / span)

    count = max((len(s.values) for s in series), default=1)
    slot = PLOT_W / count
    body: list[str] = []
    for line in series:
        points = [
            f"{LEFT + slot * (i + 0.5):.1f},{y_of(v):.1f}"
            for i, v in enumerate(line.values)
            if v is not None
        ]
        if points:
            body.append(f'<polyline class="{line.css_class}" points="{" ".join(points)}"/>')
            x, y = points[-1].split(",")
            body.append(f'<circle class="{line.css_class}" cx="{x}" cy="{y}" r="3"/>')
    decades = range(0, round(math.log10(high)) + 1)
    y_labels = [(y_of(10.0**d), _ms_label(10.0**d)) for d in decades]
    desc = "; ".join(
        f"{s.name}: latest {_ms_label(last)}"
        if (last := _last(s.values)) is not None
        else f"{s.name}: no data"
        for s in series
    )
    return _frame(chart_id, title, desc, _axes(y_labels, _minute_labels(count)) + body)


def _last(values: Sequence[float | None]) -> float | None:
    return next((v for v in reversed(values) if v is not None), None)


def _ms_label(ms: float) -> str:
    if ms >= 1000:
        return f"{ms / 1000:g} s"
    return f"{ms:g} ms"
